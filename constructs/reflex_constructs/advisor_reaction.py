"""The database advisor: its function in the VPC (reaching the configured databases only), the encrypted report
bucket, one schedule per database, the runaway-query alarm rules, and the permissions to read exactly the
configured secrets (or connect with IAM as the configured users).

The config-to-infrastructure mapping is in the pure functions below (`advisor_schedules`,
`advisor_alarm_matchers`, `advisor_connect_arns`), testable without synthesizing.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from reflex_constructs.advisor_proxy import AdvisorProxies, AdvisorProxiesProps
from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps
from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import ReactionSchedules, ReactionSchedulesProps, ScheduleGroup, ScheduleSpec
from reflex_core.config import ReflexConfig
from reflex_core.database_config import DatabaseTarget, IamConnection, SecretConnection

REACTION = "advisor"
REPORT_BUCKET_ENV = "REFLEX_REPORT_BUCKET"  # advisor/report.py reads it
# apply_index builds an index CONCURRENTLY in the invocation: give it Lambda's longest run.
FUNCTION_TIMEOUT_S = 900
DEFAULT_PORT = 5432
REPORT_RETENTION_DAYS = 400


@dataclass(frozen=True)
class AdvisorReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class AdvisorReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: AdvisorReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        dbs = config.databases
        assert dbs is not None and dbs.targets
        self.vpc: ec2.IVpc | None = None
        self.group: ec2.SecurityGroup | None = None
        subnets: ec2.SubnetSelection | None = None
        if dbs.network is not None:
            net = dbs.network
            self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=net.vpc_id,
                                                   availability_zones=list(net.availability_zones))
            subnet_list = [ec2.Subnet.from_subnet_attributes(self, f"Subnet{i}", subnet_id=s,
                                                             availability_zone=net.availability_zones[i])
                           for i, s in enumerate(net.subnet_ids)]
            for subnet in subnet_list:
                Annotations.of(subnet).acknowledge_warning("@aws-cdk/aws-ec2:noSubnetRouteTableId",
                                                          "the subnet's route table is not used")
            subnets = ec2.SubnetSelection(subnets=subnet_list)
            self.group = ec2.SecurityGroup(
                self, "FunctionSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                description=f"Reflex {config.stage} database advisor: PostgreSQL and AWS APIs out, nothing in")
            self.group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                       "AWS APIs (Secrets Manager, S3, DynamoDB, SSM, SNS, EventBridge)")
            for i, db in enumerate(dbs.targets):
                self._allow_database(i, db)
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared, timeout_s=FUNCTION_TIMEOUT_S, memory_mb=512,
            # A report delivered a day late still describes the database; a runaway sweep an hour late does not
            # matter (the next alarm sweeps again).
            description=f"Reflex database advisor ({config.stage}): reports, index proposals, runaway queries",
            vpc=self.vpc, vpc_subnets=subnets, security_groups=(self.group,) if self.group else ()))
        self.reports = s3.Bucket(
            self, "Reports", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, versioned=False,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(REPORT_RETENTION_DAYS))],
            removal_policy=RemovalPolicy.RETAIN)
        acknowledge(self.reports, "AwsSolutions-S1",
                    "Reports are written by the advisor function only (its role is the only writer) and every "
                    "write is in the audit trail; server access logs would duplicate that.")
        objects = self.reports.arn_for_objects("advisor/*")
        self.function.role.add_to_principal_policy(iam.PolicyStatement(
            sid="WriteReports", actions=["s3:PutObject", "s3:GetObject"], resources=[objects]))
        acknowledge(self.function.role, wildcard_resource_rule(self, objects),
                    "The advisor writes one report per run under advisor/<database>/<date>/ (keys made at run time) "
                    "and reads them back to verify; nothing else in its bucket.")
        self.function.function.add_environment(REPORT_BUCKET_ENV, self.reports.bucket_name)
        self._grant_connect(dbs.targets)
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.function, alarms=advisor_alarm_matchers(config),
            alarm_topic_arns=[t.arn for t in config.alarm_topics], custom_events=[]))
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=advisor_schedules(config)))
        self.proxies: AdvisorProxies | None = None
        if dbs.proxies:
            assert self.vpc is not None and dbs.network is not None and self.group is not None
            self.proxies = AdvisorProxies(self, "Proxies", AdvisorProxiesProps(
                stage=config.stage, proxies=list(dbs.proxies), vpc=self.vpc, subnet_ids=list(dbs.network.subnet_ids),
                database_groups={d.name: d.security_group_id for d in dbs.targets if d.security_group_id},
                clients=self.group, function_role=self.function.role))

    def _allow_database(self, i: int, db: DatabaseTarget) -> None:
        assert self.group is not None
        if db.security_group_id is None:
            return
        port = db.connection.port if isinstance(db.connection, IamConnection) else DEFAULT_PORT
        db_group = ec2.SecurityGroup.from_security_group_id(self, f"DatabaseGroup{i}", db.security_group_id,
                                                            mutable=True)
        self.group.add_egress_rule(ec2.Peer.security_group_id(db.security_group_id), ec2.Port.tcp(port),
                                   f"PostgreSQL {db.name}")
        db_group.add_ingress_rule(ec2.Peer.security_group_id(self.group.security_group_id), ec2.Port.tcp(port),
                                  f"Reflex database advisor to {db.name}")

    def _grant_connect(self, targets: list[DatabaseTarget]) -> None:
        secrets = [db.connection.secret_arn for db in targets if isinstance(db.connection, SecretConnection)]
        if secrets:
            self.function.role.add_to_principal_policy(iam.PolicyStatement(
                sid="ReadDatabaseSecrets", actions=["secretsmanager:GetSecretValue"], resources=secrets))
        connect = advisor_connect_arns(targets, Stack.of(self).region, Stack.of(self).account)
        if connect:
            self.function.role.add_to_principal_policy(iam.PolicyStatement(
                sid="IamDatabaseAuth", actions=["rds-db:connect"], resources=connect))


def advisor_connect_arns(targets: list[DatabaseTarget], region: str, account: str) -> list[str]:
    """`rds-db:connect` on exactly the configured (resource id, user) pairs."""
    return [f"arn:aws:rds-db:{region}:{account}:dbuser:{db.connection.resource_id}/{db.connection.user}"
            for db in targets if isinstance(db.connection, IamConnection)]


def advisor_alarm_matchers(config: ReflexConfig) -> list[AlarmMatcher]:
    return [AlarmMatcher(name=db.name, alarm_names=tuple(db.runaway.alarms.names),
                         alarm_prefixes=tuple(db.runaway.alarms.prefixes), by_tags=bool(db.runaway.alarms.tags),
                         tag_name_prefixes=tuple(db.runaway.alarms.tag_name_prefixes))
            for db in config.database_targets if db.runaway is not None]


def advisor_schedules(config: ReflexConfig) -> list[ScheduleSpec]:
    return [ScheduleSpec(name=f"advise-{db.name}", operation="advise", expression=f"cron({db.advisor.schedule})",
                         policy=db.name, max_event_age_s=86_400,
                         description=f"Database advisor report of {db.name}")
            for db in config.database_targets if db.advisor.enabled and db.advisor.schedule]
