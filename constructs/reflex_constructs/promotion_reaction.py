"""The promoter reaction: its function, the promotion state machine, and exactly the triggers and
permissions the config's `promotions` ask for.

* EventBridge rules: one per GreenReady source/detail-type, one per pair for its guard alarms (names and
  prefixes), plus alarm-action permissions and subscriptions to the stage's `alarm_topics`: a guard alarm
  reaches the function by whichever route it is wired, and the function rolls back at once.
* A Scheduler schedule `reconcile` every `evaluate_every_minutes`: the backstop for lost events.
* The state machine (`PromotionWorkflow`), whose tasks are this same function.

The config-to-infrastructure mapping is in the pure functions below, testable without a synth.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps, CustomEventMatcher
from reflex_constructs.promotion_permissions import PromotionPermissions, PromotionPermissionsProps
from reflex_constructs.promotion_workflow import (
    PromotionWorkflow,
    PromotionWorkflowProps,
    execution_arns,
    state_machine_arn,
)
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import (
    ReactionSchedules,
    ReactionSchedulesProps,
    ScheduleGroup,
    ScheduleSpec,
    rate_expression,
)
from reflex_core.config import ReflexConfig

REACTION = "promoter"


@dataclass(frozen=True)
class PromoterReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class PromoterReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: PromoterReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        machine_arn = state_machine_arn(self, config.stage)
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared, workflow_arn=machine_arn,
            # The DeploymentCompleted event each pair publishes when it finalizes (in the deploying team's source).
            emits=tuple(dict.fromkeys((p.completed.source, p.completed.detail_type) for p in config.promotions)),
            description=f"Reflex promoter ({config.stage}): blue/green promotion and rollback"))
        self.workflow = PromotionWorkflow(self, "Workflow", PromotionWorkflowProps(
            stage=config.stage, function_arn=self.function.function.function_arn,
            notifications=props.shared.notifications))
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.function,
            alarms=promoter_alarm_matchers(config),
            alarm_topic_arns=[t.arn for t in config.alarm_topics],
            custom_events=promoter_custom_events(config),
        ))
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=promoter_schedules(config)))
        self.permissions = PromotionPermissions(self, "Permissions", PromotionPermissionsProps(
            role=self.function.role, pairs=config.promotions, state_machine_arn=machine_arn,
            execution_arns=execution_arns(self, config.stage)))


def promoter_alarm_matchers(config: ReflexConfig) -> list[AlarmMatcher]:
    return [AlarmMatcher(name=f"guard-{p.name}", alarm_names=tuple(p.guard_alarms.names),
                         alarm_prefixes=tuple(p.guard_alarms.prefixes)) for p in config.promotions]


def promoter_custom_events(config: ReflexConfig) -> list[CustomEventMatcher]:
    matchers = {CustomEventMatcher(source=p.green_ready.source, detail_type=p.green_ready.detail_type): None
                for p in config.promotions}
    return list(matchers)


def promoter_schedules(config: ReflexConfig) -> list[ScheduleSpec]:
    minutes = config.evaluate_every_minutes
    return [ScheduleSpec(
        name="reconcile", operation="reconcile", expression=rate_expression(minutes),
        max_event_age_s=max(60, minutes * 60),
        description=f"Every {minutes} min: roll back promotions whose workflow died or whose guard alarm is in "
                    "ALARM (a lost event); complete retention windows that ended",
    )]
