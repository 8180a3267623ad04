"""The scaler reaction: its function plus exactly the triggers, schedules and permissions the config asks for.

The config-to-infrastructure mapping lives in the small pure functions below (`scaler_alarm_matchers`,
`scaler_custom_events`, `scaler_schedules`), so it is testable without synthesizing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps, CustomEventMatcher
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import (
    ReactionSchedules,
    ReactionSchedulesProps,
    ScheduleGroup,
    ScheduleSpec,
    rate_expression,
)
from reflex_constructs.scaler_permissions import ScalerPermissions, ScalerPermissionsProps
from reflex_core.config import ReflexConfig

REACTION = "scaler"
_MAX_SCHEDULE_EVENT_AGE_S = 86_400


@dataclass(frozen=True)
class ScalerReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class ScalerReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ScalerReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared,
            description=f"Reflex scaler ({config.stage}): ECS services, Auto Scaling groups, Aurora replicas"))
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.function,
            alarms=scaler_alarm_matchers(config),
            alarm_topic_arns=[t.arn for t in config.alarm_topics],
            custom_events=scaler_custom_events(config),
        ))
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=scaler_schedules(config)))
        self.permissions = ScalerPermissions(self, "Permissions", ScalerPermissionsProps(
            role=self.function.role, policies=config.scaling))


def scaler_alarm_matchers(config: ReflexConfig) -> list[AlarmMatcher]:
    return [
        AlarmMatcher(name=p.name, alarm_names=tuple(p.scale_out.alarms.names),
                     alarm_prefixes=tuple(p.scale_out.alarms.prefixes), by_tags=bool(p.scale_out.alarms.tags),
                     tag_name_prefixes=tuple(p.scale_out.alarms.tag_name_prefixes))
        for p in config.scaling if p.scale_out is not None
    ]


def scaler_custom_events(config: ReflexConfig) -> list[CustomEventMatcher]:
    # Deduplicated: two policies listening to the same event share one rule. The config model already
    # refuses Reflex's own decision source (reflex.<stage>), which would loop.
    matchers = {CustomEventMatcher(source=m.source, detail_type=m.detail_type): None
                for policy in config.scaling for m in policy.on_events}
    return list(matchers)


def scaler_schedules(config: ReflexConfig) -> list[ScheduleSpec]:
    minutes = config.evaluate_every_minutes
    specs = [ScheduleSpec(
        name="evaluate", operation="evaluate", expression=rate_expression(minutes),
        # A late evaluation is superseded by the next one.
        max_event_age_s=max(60, minutes * 60),
        description=f"Every {minutes} min: end pre-warms, repeat scale-out while in ALARM, scale in when OK",
    )]
    for policy in config.scaling:
        for pw in policy.prewarm:
            specs.append(ScheduleSpec(
                name=f"{policy.name}-{pw.name}", operation="prewarm", expression=f"cron({pw.cron})",
                timezone=pw.timezone, policy=policy.name, params={"prewarm": pw.name},
                # Still worth applying late while the window lasts (the window ends at scheduled time +
                # for_minutes whatever the delivery time).
                max_event_age_s=min(max(60, pw.for_minutes * 60), _MAX_SCHEDULE_EVENT_AGE_S),
                description=f"Pre-warm {policy.name} to at least {pw.min} for {pw.for_minutes} min",
            ))
    return specs
