"""The stage's dedicated event bus (config `event_bus: {dedicated: true, publishers: [...]}`), and the warnings a
production-like stage gets at synth time.

On the default bus any principal of the account with `events:PutEvents` can send a `ScaleRequested` or a
`GreenReady`. On the dedicated bus `reflex-<stage>` the resource policy lets only the configured publishers put
events, and only with the sources Reflex's rules listen to (each custom-event rule registers its source); Reflex's
own functions put their decisions (source `reflex.<stage>`) with their own identity policy. Alarm and S3 events are
AWS events: they stay on the default bus, and those rules pin the account.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import jsii
from aws_cdk import Annotations, IStableListProducer, Lazy, Stack
from aws_cdk import aws_events as events
from constructs import Construct

from reflex_core.config_base import StageConfig


@dataclass(frozen=True)
class ReflexEventBusProps:
    stage: str
    publishers: list[str] = field(default_factory=list)


class ReflexEventBus(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ReflexEventBusProps) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"reflex-{props.stage}")
        self._sources: list[str] = []
        for i, publisher in enumerate(props.publishers):
            events.CfnEventBusPolicy(
                self, f"Publisher{i}", event_bus_name=self.bus.event_bus_name,
                statement_id=f"ApplicationPublisher{i}",
                statement={
                    "Sid": f"ApplicationPublisher{i}", "Effect": "Allow", "Principal": {"AWS": publisher},
                    "Action": "events:PutEvents", "Resource": self.bus.event_bus_arn,
                    "Condition": {"StringEquals": {
                        "events:source": Lazy.list(_RegisteredSources(self._sources))}},
                })

    def allow_source(self, source: str) -> None:
        """A custom-event rule listens to `source`: the publishers may put events with it."""
        self._sources.append(source)

    @property
    def event_bus_arn(self) -> str:
        return self.bus.event_bus_arn

    @property
    def event_bus_name(self) -> str:
        return self.bus.event_bus_name


@jsii.implements(IStableListProducer)
class _RegisteredSources:
    """The sources the custom-event rules registered, read when the template is written (after every reaction)."""

    def __init__(self, sources: list[str]) -> None:
        self._sources = sources

    def produce(self) -> list[str]:
        return sorted(set(self._sources)) or ["-"]


def warn_about_production_gaps(scope: Construct, config: StageConfig) -> None:
    """Loud synth-time warnings for a production-like stage (config.is_prod_like) that would fail silently later."""
    if not config.is_prod_like:
        return
    warnings = []
    if not config.notify.emails:
        warnings.append(f"stage {config.stage} is production-like but notify.emails is empty: every Reflex failure "
                        "alarm and PAGE notice goes to a topic nobody reads. Add subscribers (notify.emails) or "
                        "subscribe the topic elsewhere.")
    if not config.operators.operator:
        warnings.append(f"stage {config.stage} is production-like but operators.operator is empty: console commands "
                        "are not restricted to verified operators (docs/security.md).")
    for text in warnings:
        Annotations.of(Stack.of(scope)).add_warning_v2("reflex:production", text)
        sys.stderr.write(f"\n*** REFLEX WARNING: {text}\n\n")
