"""Runs the real Pulumi program offline: under Pulumi mocks, with no AWS account and no Docker engine."""
