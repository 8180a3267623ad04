"""Where the functions that reach Redis run: the configured VPC and subnets, and their own security group.

* The functions' security group allows out only Redis (to the caches' groups, on the caches' ports) and HTTPS
  (the AWS APIs Reflex calls, through the subnets' NAT gateway or VPC endpoints); nothing comes in.
* For existing caches, an ingress rule is added to the configured cache security group: from the functions'
  group, on each configured Redis port. Caches the stack creates get their own group (invalidation_managed_cache).
* For subnets without a NAT gateway, the VPC endpoints the config lists (`vpc.endpoints`): interface endpoints
  with private DNS in the configured subnets, behind a group that admits HTTPS from the functions' group only;
  DynamoDB as a gateway endpoint on the configured route tables (free, and the only kind with private DNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Annotations, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from reflex_core.invalidation_config import InvalidationVpc

# Interface endpoints, by the names `vpc.endpoints` uses (DynamoDB is a gateway endpoint, below).
INTERFACE_SERVICES: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "secretsmanager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,  # alarm tags (ListTagsForResource)
}


@dataclass(frozen=True)
class InvalidationNetworkProps:
    stage: str
    vpc: InvalidationVpc
    existing_cache_ports: Sequence[int]


class InvalidationNetwork(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: InvalidationNetworkProps) -> None:
        super().__init__(scope, construct_id)
        cfg = props.vpc
        zones = cfg.availability_zones or [f"{Stack.of(self).region}-zone-{i}" for i in range(len(cfg.subnet_ids))]
        self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=cfg.vpc_id, availability_zones=zones)
        subnets = [ec2.Subnet.from_subnet_attributes(self, f"Subnet{i}", subnet_id=subnet, availability_zone=zones[i])
                   for i, subnet in enumerate(cfg.subnet_ids)]
        for subnet in subnets:
            # Only the subnet ids are used (Lambda's VpcConfig, the cache's subnet group); no route is changed.
            Annotations.of(subnet).acknowledge_warning("@aws-cdk/aws-ec2:noSubnetRouteTableId",
                                                      "the subnet's route table is not used")
        self.subnets = ec2.SubnetSelection(subnets=subnets)
        self.subnet_ids = list(cfg.subnet_ids)
        self.functions_group = ec2.SecurityGroup(
            self, "FunctionsSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description=f"Reflex {props.stage} invalidation functions: Redis and AWS APIs out, nothing in")
        self.functions_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                             "AWS APIs (SQS, DynamoDB, SSM, SNS, EventBridge, Secrets Manager)")
        self._endpoints(cfg)
        self.cache_group: ec2.ISecurityGroup | None = None
        if cfg.cache_security_group_id and props.existing_cache_ports:
            self.cache_group = ec2.SecurityGroup.from_security_group_id(
                self, "CacheSecurityGroup", cfg.cache_security_group_id, mutable=False)
            for port in sorted(set(props.existing_cache_ports)):
                self.allow_redis(self.cache_group, port, label="Existing")

    def _endpoints(self, cfg: InvalidationVpc) -> None:
        interface = [name for name in cfg.endpoints if name in INTERFACE_SERVICES]
        if interface:
            group = ec2.SecurityGroup(
                self, "EndpointsSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                description="Reflex VPC endpoints: HTTPS in from the Reflex invalidation functions only")
            group.add_ingress_rule(ec2.Peer.security_group_id(self.functions_group.security_group_id),
                                   ec2.Port.tcp(443), "HTTPS from the Reflex invalidation functions")
            for name in interface:
                ec2.InterfaceVpcEndpoint(
                    self, f"Endpoint-{name}", vpc=self.vpc, service=INTERFACE_SERVICES[name], subnets=self.subnets,
                    security_groups=[group], private_dns_enabled=True, open=False)
        if "dynamodb" in cfg.endpoints:
            ec2.CfnVPCEndpoint(
                self, "Endpoint-dynamodb", vpc_id=cfg.vpc_id, vpc_endpoint_type="Gateway",
                service_name=f"com.amazonaws.{Stack.of(self).region}.dynamodb",
                route_table_ids=list(cfg.route_table_ids))

    def allow_redis(self, cache_group: ec2.ISecurityGroup, port: int, *, label: str) -> None:
        """Functions -> cache on `port`, both directions of the rule (egress here, ingress on the cache's group)."""
        self.functions_group.add_egress_rule(ec2.Peer.security_group_id(cache_group.security_group_id),
                                             ec2.Port.tcp(port), f"Redis on {port} ({label})")
        ec2.CfnSecurityGroupIngress(
            self, f"RedisIngress{label}{port}",
            group_id=cache_group.security_group_id, ip_protocol="tcp", from_port=port, to_port=port,
            source_security_group_id=self.functions_group.security_group_id,
            description="Reflex invalidation functions (invalidator, cache health collector)")
