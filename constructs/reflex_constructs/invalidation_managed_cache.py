"""An ElastiCache replication group the stack creates for a cache whose config has a `create:` block.

TLS in transit (required) and encryption at rest; an AUTH token generated into a Secrets Manager secret and
referenced by the replication group (a dynamic reference: the token is never in the template); Multi-AZ with
automatic failover (at least one replica per shard); more than one shard is cluster mode; a non-default port;
its own security group, open only to the invalidation functions' group; daily snapshots.

What the functions need at run time (endpoint, port, secret ARN) is known only at deploy time: it travels in
`REFLEX_INVALIDATION` (`InvalidationSettings.managed_caches`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from reflex_constructs.invalidation_network import InvalidationNetwork
from reflex_constructs.nag_acknowledgements import acknowledge
from reflex_core.invalidation_config import CacheConfig, ManagedCache


@dataclass(frozen=True)
class ManagedCacheProps:
    stage: str
    cache: CacheConfig
    network: InvalidationNetwork


def parameter_group(create: ManagedCache) -> str | None:
    """The default parameter group with cluster mode on, for more than one shard."""
    if create.shards == 1:
        return None
    major = create.engine_version.split(".", 1)[0]
    family = f"{create.engine}{major}" if create.engine == "valkey" or int(major) >= 7 else f"redis{major}.x"
    return f"default.{family}.cluster.on"


class ManagedReplicationGroup(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ManagedCacheProps) -> None:
        super().__init__(scope, construct_id)
        cache = props.cache
        create = cache.create
        assert create is not None
        network = props.network
        self.cluster = create.shards > 1
        self.port = create.port
        self.secret = secretsmanager.Secret(
            self, "AuthToken", secret_name=f"reflex/{props.stage}/cache/{cache.name}/auth-token",
            description=f"AUTH token of the {cache.name} cache (Reflex {props.stage})",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({}), generate_string_key="password",
                exclude_punctuation=True, password_length=64))
        acknowledge(self.secret, "AwsSolutions-SMG4",
                    "The ElastiCache AUTH token is changed with ModifyReplicationGroup (AuthTokenUpdateStrategy "
                    "ROTATE then SET), not by a Secrets Manager rotation function; rotate it in a maintenance "
                    "window as described in docs/runbooks/invalidation.md.")
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=network.vpc, allow_all_outbound=False,
            description=f"Reflex {props.stage} cache {cache.name}: Redis from the invalidation functions only")
        network.allow_redis(self.security_group, create.port, label=f"Managed{cache.name.replace('-', '')}")
        subnets = elasticache.CfnSubnetGroup(
            self, "SubnetGroup", cache_subnet_group_name=f"reflex-{props.stage}-{cache.name}",
            description=f"Reflex {props.stage} cache {cache.name}", subnet_ids=network.subnet_ids)
        self.group = elasticache.CfnReplicationGroup(
            self, "ReplicationGroup",
            replication_group_id=f"reflex-{props.stage}-{cache.name}"[:40],
            replication_group_description=f"Reflex {props.stage} cache {cache.name}",
            engine=create.engine, engine_version=create.engine_version, cache_node_type=create.node_type,
            port=create.port, num_node_groups=create.shards, replicas_per_node_group=create.replicas_per_shard,
            cache_parameter_group_name=parameter_group(create),
            automatic_failover_enabled=True, multi_az_enabled=True,
            transit_encryption_enabled=True, transit_encryption_mode="required", at_rest_encryption_enabled=True,
            auth_token=self.secret.secret_value_from_json("password").unsafe_unwrap(),
            cache_subnet_group_name=subnets.ref, security_group_ids=[self.security_group.security_group_id],
            snapshot_retention_limit=create.snapshot_retention_days, auto_minor_version_upgrade=True)
        self.group.apply_removal_policy(RemovalPolicy.SNAPSHOT)

    @property
    def host(self) -> str:
        return (self.group.attr_configuration_end_point_address if self.cluster
                else self.group.attr_primary_end_point_address)
