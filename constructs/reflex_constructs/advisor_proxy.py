"""Optional RDS Proxies (`databases.proxies`): connection pooling for the application's database and for
Reflex's own access to it. IAM authentication is required and TLS is enforced; the proxy reads only its
engine secret; clients reach it from the advisor's security group (applications add theirs to the proxy's
group); the advisor may `rds-db:connect` to these proxies only."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_core.database_config import RdsProxy

PORT = 5432


@dataclass(frozen=True)
class AdvisorProxiesProps:
    stage: str
    proxies: list[RdsProxy]
    # The security group of each proxied database (by database name).
    database_groups: dict[str, str]
    vpc: ec2.IVpc
    subnet_ids: list[str]
    clients: ec2.ISecurityGroup
    function_role: iam.IRole


class AdvisorProxies(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: AdvisorProxiesProps) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.proxies: dict[str, rds.CfnDBProxy] = {}
        group = ec2.SecurityGroup(self, "ProxySecurityGroup", vpc=props.vpc, allow_all_outbound=False,
                                  description=f"Reflex {props.stage} RDS proxies: PostgreSQL in from clients")
        group.add_ingress_rule(ec2.Peer.security_group_id(props.clients.security_group_id), ec2.Port.tcp(PORT),
                               "PostgreSQL from the Reflex database advisor")
        for i, (name, group_id) in enumerate(sorted({p.database: props.database_groups[p.database]
                                                     for p in props.proxies}.items())):
            group.add_egress_rule(ec2.Peer.security_group_id(group_id), ec2.Port.tcp(PORT), f"PostgreSQL {name}")
            ec2.SecurityGroup.from_security_group_id(self, f"DatabaseGroup{i}", group_id).add_ingress_rule(
                ec2.Peer.security_group_id(group.security_group_id), ec2.Port.tcp(PORT), f"Reflex RDS proxy to {name}")
        subnet_ids = list(props.subnet_ids)
        connect_arns = []
        for proxy in props.proxies:
            role = iam.Role(self, f"Role-{proxy.name}", assumed_by=iam.ServicePrincipal("rds.amazonaws.com"),
                            description=f"RDS proxy {proxy.name}: reads its engine secret only")
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"],
                                                   resources=[proxy.engine_secret_arn]))
            cfn = rds.CfnDBProxy(
                self, f"Proxy-{proxy.name}", db_proxy_name=proxy.name, engine_family="POSTGRESQL",
                role_arn=role.role_arn, vpc_subnet_ids=subnet_ids, vpc_security_group_ids=[group.security_group_id],
                require_tls=True, idle_client_timeout=1800,
                auth=[rds.CfnDBProxy.AuthFormatProperty(auth_scheme="SECRETS", iam_auth="REQUIRED",
                                                        secret_arn=proxy.engine_secret_arn)])
            targets = rds.CfnDBProxyTargetGroup(
                self, f"Targets-{proxy.name}", db_proxy_name=cfn.ref, target_group_name="default",
                db_cluster_identifiers=[proxy.db_cluster_identifier] if proxy.db_cluster_identifier else None,
                db_instance_identifiers=[proxy.db_instance_identifier] if proxy.db_instance_identifier else None,
                connection_pool_configuration_info=rds.CfnDBProxyTargetGroup.ConnectionPoolConfigurationInfoFormatProperty(
                    max_connections_percent=proxy.max_connections_percent))
            # The stack's tags are applied to every taggable resource; CloudFormation's target group has no Tags.
            targets.add_property_deletion_override("Tags")
            self.proxies[proxy.name] = cfn
            # arn:aws:rds:<region>:<account>:db-proxy:prx-<id> -> the proxy's resource id prx-<id>.
            proxy_id = Fn.select(6, Fn.split(":", cfn.attr_db_proxy_arn))
            connect_arns.append(Fn.join("", [f"arn:aws:rds-db:{stack.region}:{stack.account}:dbuser:", proxy_id,
                                             "/*"]))
        policy = iam.Policy(self, "ConnectPolicy", statements=[iam.PolicyStatement(
            actions=["rds-db:connect"], resources=connect_arns)])
        policy.attach_to_role(props.function_role)
        for arn in connect_arns:
            acknowledge(policy, wildcard_resource_rule(self, arn),
                        "rds-db:connect is scoped to the proxies this construct creates; the database user is "
                        "chosen by the application's secret, which the stack does not know.")
