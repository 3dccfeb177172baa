"""Adapts the plain rules in forgestack_rules.py to pulumi-policy's ResourceValidationPolicy / StackValidationPolicy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

try:  # inside the pack, this directory is on sys.path; in the repository, policy/ is a package
    import forgestack_rules as rules
except ImportError:
    from policy import forgestack_rules as rules

LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def _resource(resource_type: str, name: str, props: Any, urn: str, dependencies: list[Any] | None = None) -> rules.Resource:
    return rules.Resource(resource_type, name, dict(props or {}), urn, tuple(d.urn for d in dependencies or []))


def _report(rule: rules.Rule, name: str, message: str, report: ReportViolation, urn: str | None = None) -> None:
    reason = rules.ACCEPTED_RISKS.get((rule.name, name))
    if reason:
        return  # accepted risk: documented in forgestack_rules.ACCEPTED_RISKS and the README
    report(f"{name}: {message}", urn)


def resource_validator(rule: rules.Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.types or rule.check is None:
            return
        for message in rule.check(_resource(args.resource_type, args.name, args.props, args.urn)):
            _report(rule, args.name, message, report_violation)
    return validate


def stack_validator(rule: rules.Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        assert rule.check_stack is not None
        resources = [_resource(r.resource_type, r.name, r.props, r.urn, r.dependencies) for r in args.resources]
        urns = {r.name: r.urn for r in resources}
        for name, message in rule.check_stack(resources):
            _report(rule, name, message, report_violation, urns.get(name))
    return validate


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    built: list[ResourceValidationPolicy | StackValidationPolicy] = []
    for rule in rules.RULES:
        if rule.check:
            built.append(ResourceValidationPolicy(rule.name, rule.description, resource_validator(rule), LEVELS[rule.enforcement]))
        else:
            built.append(StackValidationPolicy(rule.name, rule.description, stack_validator(rule), LEVELS[rule.enforcement]))
    return built
