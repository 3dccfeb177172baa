"""Cache (topology ha): Amazon ElastiCache for Valkey, Gitea's shared cache, sessions and queues.

A replication group with one node per zone and automatic failover; TLS in transit, an auth token (the stack's
valkeyPassword credential), encrypted at rest with the stack's key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.kms import rotating_key
from components.services import images

ENGINE: Final = "valkey"


def engine_version(image: str) -> str:
    """ElastiCache's major.minor of the Valkey the single host runs (valkey/valkey:8.1.4-alpine -> 8.1): one version."""
    major, minor = image.split(":", 1)[1].split("-", 1)[0].split(".")[:2]
    return f"{major}.{minor}"


ENGINE_VERSION: Final = engine_version(images.VALKEY)
PARAMETER_FAMILY: Final = f"valkey{ENGINE_VERSION.split('.')[0]}"
PORT: Final = 6379
SNAPSHOT_DAYS: Final = 7
SNAPSHOT_WINDOW: Final = "01:00-02:00"  # UTC, before the database's backup window
MAINTENANCE_WINDOW: Final = "sun:04:30-sun:05:30"


@dataclass(frozen=True)
class CacheArgs:
    stack: str
    node_type: str
    nodes: int  # one per zone: a primary and its replicas
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    auth_token: pulumi.Input[str]
    protect: bool = False


# Queues must never be evicted: writes are refused when memory is full instead (as on the single host).
PARAMETERS: Final = {"maxmemory-policy": "noeviction"}


class Cache(pulumi.ComponentResource):
    group: aws.elasticache.ReplicationGroup

    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if args.nodes < 2:
            raise ValueError("automatic failover needs at least two nodes")
        self.key = rotating_key(f"{name}-key", f"forgestack {args.stack} cache", self, args.protect)
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets", subnet_ids=args.subnet_ids, description="forgestack cache: private subnets", opts=child
        )
        parameter_group = aws.elasticache.ParameterGroup(
            f"{name}-parameters",
            family=PARAMETER_FAMILY,
            description="forgestack: queues are never evicted",
            parameters=[aws.elasticache.ParameterGroupParameterArgs(name=key, value=value) for key, value in PARAMETERS.items()],
            opts=child,
        )
        self.group = aws.elasticache.ReplicationGroup(
            f"{name}-valkey",
            description=f"forgestack {args.stack}: Gitea cache, sessions and queues",
            engine=ENGINE,
            engine_version=ENGINE_VERSION,
            node_type=args.node_type,
            num_cache_clusters=args.nodes,
            port=PORT,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            parameter_group_name=parameter_group.name,
            subnet_group_name=subnets.name,
            security_group_ids=[args.security_group_id],
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=pulumi.Output.secret(args.auth_token),
            at_rest_encryption_enabled=True,
            kms_key_id=self.key.arn,
            snapshot_retention_limit=SNAPSHOT_DAYS,
            snapshot_window=SNAPSHOT_WINDOW,
            maintenance_window=MAINTENANCE_WINDOW,
            auto_minor_version_upgrade=True,
            apply_immediately=not args.protect,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.register_outputs({"primaryEndpoint": self.group.primary_endpoint_address})
