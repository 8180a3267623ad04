"""`Reflex-<stage>`: the stage's shared resources and one construct per reaction the config uses.

Adding a reaction (invalidator, promoter) means one more `<Reaction>Reaction` construct here, built from
`ReactionFunction` plus its own triggers and target permissions; the shared resources are reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from reflex_constructs.advisor_reaction import AdvisorReaction, AdvisorReactionProps
from reflex_constructs.functions_asset import FunctionsAssetProps, function_code
from reflex_constructs.invalidation_reaction import InvalidationReaction, InvalidationReactionProps
from reflex_constructs.kill_switches import KillSwitches, KillSwitchesProps
from reflex_constructs.notifications import Notifications, NotificationsProps
from reflex_constructs.operator_access import OperatorAccess, OperatorAccessProps
from reflex_constructs.promotion_reaction import PromoterReaction, PromoterReactionProps
from reflex_constructs.reaction_function import ReactionFunction, StageResources
from reflex_constructs.reaction_schedules import ScheduleGroup
from reflex_constructs.recovery_backup import RecoveryBackup, RecoveryBackupProps
from reflex_constructs.recovery_drills import RecoveryDrills, RecoveryDrillsProps
from reflex_constructs.recovery_failover import RecoveryFailover, RecoveryFailoverProps
from reflex_constructs.reflex_event_bus import ReflexEventBus, ReflexEventBusProps, warn_about_production_gaps
from reflex_constructs.resharder_reaction import ResharderReaction, ResharderReactionProps
from reflex_constructs.scaler_reaction import ScalerReaction, ScalerReactionProps
from reflex_constructs.shards_reaction import ShardsReaction, ShardsReactionProps
from reflex_constructs.tables import ReflexTables, ReflexTablesProps
from reflex_core.config import ReflexConfig

if TYPE_CHECKING:
    from reflex_constructs.monitoring import StageMonitoring


@dataclass(frozen=True)
class ReflexStackProps:
    config: ReflexConfig
    functions_dir: Path
    requirements_file: Path


class ReflexStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, props: ReflexStackProps, **stack_kwargs: Any) -> None:
        super().__init__(scope, construct_id, **stack_kwargs)
        config = props.config
        Tags.of(self).add("reflex:stage", config.stage)
        self.shared = self._build_shared(props)
        self.schedule_group = ScheduleGroup(self, "ScheduleGroup", stage=config.stage)
        self.scaler: ScalerReaction | None = None
        if config.scaling:
            self.scaler = ScalerReaction(self, "Scaler", ScalerReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.promoter: PromoterReaction | None = None
        if config.promotions:
            self.promoter = PromoterReaction(self, "Promoter", PromoterReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.invalidation: InvalidationReaction | None = None
        if config.invalidation.enabled:
            self.invalidation = InvalidationReaction(self, "Invalidation", InvalidationReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.shards: ShardsReaction | None = None
        if config.sharding and config.sharding.sets:
            self.shards = ShardsReaction(self, "Shards", ShardsReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.resharder: ResharderReaction | None = None
        if config.resharding:
            self.resharder = ResharderReaction(self, "Resharder", ResharderReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.advisor: AdvisorReaction | None = None
        if config.databases and config.databases.targets:
            self.advisor = AdvisorReaction(self, "Advisor", AdvisorReactionProps(
                shared=self.shared, config=config, schedule_group=self.schedule_group))
        self.recovery_backup: RecoveryBackup | None = None
        self.recovery_drills: RecoveryDrills | None = None
        if config.recovery.resources:
            self.recovery_backup = RecoveryBackup(self, "RecoveryBackup", RecoveryBackupProps(
                stage=config.stage, recovery=config.recovery))
            self.recovery_drills = RecoveryDrills(self, "RecoveryDrills", RecoveryDrillsProps(
                shared=self.shared, recovery=config.recovery, schedule_group=self.schedule_group,
                backups=self.recovery_backup))
        self.recovery_failover: RecoveryFailover | None = None
        if config.recovery.failover:
            self.recovery_failover = RecoveryFailover(self, "RecoveryFailover", RecoveryFailoverProps(
                shared=self.shared, recovery=config.recovery))
        self.monitoring: StageMonitoring | None = None
        if config.monitoring is not None:
            # Imported here: loading cdk-monitoring-constructs (jsii) takes seconds, only stages that use it pay.
            from reflex_constructs.monitoring import StageMonitoring, StageMonitoringProps

            # Last: it watches every reaction function built above, whichever reactions the stage has.
            self.monitoring = StageMonitoring(self, "Monitoring", StageMonitoringProps(
                stage=config.stage, config=config.monitoring, topic=self.shared.notifications.topic,
                functions=tuple(c for c in self.node.find_all() if isinstance(c, ReactionFunction))))
        self._build_outputs()

    def _build_shared(self, props: ReflexStackProps) -> StageResources:
        config = props.config
        tables = ReflexTables(self, "Tables", ReflexTablesProps(stage=config.stage))
        kill_switches = KillSwitches(self, "KillSwitches", KillSwitchesProps(stage=config.stage))
        warn_about_production_gaps(self, config)
        return StageResources(
            stage=config.stage,
            code=function_code(FunctionsAssetProps(source_dir=props.functions_dir,
                                                   requirements_file=props.requirements_file, config=config,
                                                   bundling_required=self.bundling_required)),
            tables=tables,
            notifications=Notifications(self, "Notifications", NotificationsProps(
                topic_name=config.notify.topic_name, emails=list(config.notify.emails))),
            kill_switches=kill_switches,
            reserved_concurrency=dict(config.reserved_concurrency),
            event_bus=ReflexEventBus(self, "EventBus", ReflexEventBusProps(
                stage=config.stage, publishers=list(config.event_bus.publishers)))
            if config.event_bus.dedicated else None,
            operator_access=OperatorAccess(self, "OperatorAccess", OperatorAccessProps(
                stage=config.stage, audit_table=tables.audit, kill_switch_prefix=kill_switches.prefix)),
        )

    def _build_outputs(self) -> None:
        shared = self.shared
        CfnOutput(self, "AuditTableName", value=shared.tables.audit.table_name)
        CfnOutput(self, "NotifyTopicArn", value=shared.notifications.topic.topic_arn)
        CfnOutput(self, "KillSwitchPrefix", value=shared.kill_switches.prefix)
        if self.scaler is not None:
            CfnOutput(self, "ScalerFunctionName", value=self.scaler.function.function.function_name)
            CfnOutput(self, "ScalerDeadLetterQueueUrl", value=self.scaler.function.dead_letter_queue.queue_url)
        if self.promoter is not None:
            CfnOutput(self, "PromoterFunctionName", value=self.promoter.function.function.function_name)
            CfnOutput(self, "PromotionStateMachineArn", value=self.promoter.workflow.state_machine.state_machine_arn)
        if self.recovery_failover is not None:
            CfnOutput(self, "FailoverFunctionName", value=self.recovery_failover.function.function.function_name)
            CfnOutput(self, "FailoverStateMachineArn",
                      value=self.recovery_failover.state_machine.state_machine_arn)
        if self.resharder is not None:
            CfnOutput(self, "ResharderFunctionName", value=self.resharder.function.function.function_name)
