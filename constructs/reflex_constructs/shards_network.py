"""Where the shard function runs: the configured VPC and subnets, its own security group, and exactly the
shard databases as destinations.

* The function's group allows out HTTPS (the AWS APIs, through NAT or endpoints) and PostgreSQL to each
  configured shard's security group on the shard's port; nothing comes in.
* Each shard's group gets one ingress rule: from the function's group, on the shard's port.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from reflex_core.sharding_config import ShardingConfig


@dataclass(frozen=True)
class ShardsNetworkProps:
    stage: str
    sharding: ShardingConfig


def shard_destinations(sharding: ShardingConfig) -> list[tuple[str, int]]:
    """(security group, port) of every configured shard database, each once, in a stable order."""
    out: dict[tuple[str, int], None] = {}
    for sset in sharding.sets:
        for shard in sset.shards:
            if shard.security_group_id:
                out[(shard.security_group_id, shard.port)] = None
    return list(out)


class ShardsNetwork(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ShardsNetworkProps) -> None:
        super().__init__(scope, construct_id)
        cfg = props.sharding.vpc
        assert cfg is not None
        self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=cfg.vpc_id,
                                               availability_zones=list(cfg.availability_zones))
        subnets = [ec2.Subnet.from_subnet_attributes(self, f"Subnet{i}", subnet_id=s,
                                                     availability_zone=cfg.availability_zones[i])
                   for i, s in enumerate(cfg.subnet_ids)]
        for subnet in subnets:
            Annotations.of(subnet).acknowledge_warning("@aws-cdk/aws-ec2:noSubnetRouteTableId",
                                                      "the subnet's route table is not used")
        self.subnets = ec2.SubnetSelection(subnets=subnets)
        self.functions_group = ec2.SecurityGroup(
            self, "FunctionSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description=f"Reflex {props.stage} shard mover: PostgreSQL to the shard databases and AWS APIs out")
        self.functions_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                             "AWS APIs (DynamoDB, SSM, SNS, EventBridge, Step Functions, Secrets)")
        for i, (group_id, port) in enumerate(shard_destinations(props.sharding)):
            self.functions_group.add_egress_rule(ec2.Peer.security_group_id(group_id), ec2.Port.tcp(port),
                                                 f"PostgreSQL shard on {port}")
            ec2.CfnSecurityGroupIngress(
                self, f"ShardIngress{i}", group_id=group_id, ip_protocol="tcp", from_port=port, to_port=port,
                source_security_group_id=self.functions_group.security_group_id,
                description="Reflex shard mover")
