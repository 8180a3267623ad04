"""Each promotion schedule end to end: GreenReady -> the deployed workflow definition (local driver, virtual
clock) -> the real promoter handler -> moto ELBv2 / Route 53. Weights are read back from the listener (or
the records) after every step."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.promotion_config import AllAtOnce, Canary, Linear
from reflex_core.runtime import install_runtime
from tests.support.promotion import PromotionBench, bench, completed_events, with_pair


@pytest.fixture
def make(dev_config, clock) -> Iterator[Any]:
    with mock_aws():
        yield lambda **changes: bench(with_pair(dev_config, **changes), clock)
    install_runtime(None)


def shifts(b: PromotionBench) -> list[tuple[float, dict[str, int]]]:
    """(seconds since the first shift, weights written) for each executed shift."""
    from datetime import datetime

    records = [r for r in b.audit() if r["operation"] == "shift" and r["outcome"] == "executed"]
    times = [datetime.fromisoformat(r["at"].replace("Z", "+00:00")) for r in records]
    return [((t - times[0]).total_seconds(), r["action"]["intended"]["weights"]) for t, r in zip(times, records,
                                                                                                   strict=True)]


def test_canary_with_approval_gate_then_finalize_and_retention(make) -> None:
    b = make()  # config/dev.yaml: canary 10 % for 300 s, approval before the last step, bake 120 s
    read_completed = completed_events(b.world)
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.green_ready(release="v2")["decisions"][0]["outcome"] == "executed"

    b.run(1)
    assert b.weights() == {"blue": 90, "green": 10}
    b.run()  # bake 300 s, check, then the gate
    assert b.record().promotion.status == "awaiting-approval"
    assert b.weights() == {"blue": 90, "green": 10}

    assert b.console("promote", reason="canary looks good")["decisions"][0]["outcome"] == "executed"
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}
    b.run(120)  # final bake, check, finalize
    record = b.record()
    assert record.live == "green" and record.promotion.status == "finalized"
    # Blue is kept in the forward config at weight 0 for the retention window: one call rolls back.
    (event,) = read_completed()
    assert event["detail-type"] == "DeploymentCompleted"
    assert event["detail"] == event["detail"] | {"pair": "web", "live": "green", "previous": "blue", "release": "v2"}

    b.run()  # retention 3600 s, cleanup
    assert b.record().promotion.status == "completed"
    assert b.execution().status == "SUCCEEDED"
    assert b.weights() == {"blue": 0, "green": 100}
    timeline = shifts(b)
    assert [w for _, w in timeline] == [{"green": 10, "blue": 90}, {"green": 100, "blue": 0}]
    assert timeline[1][0] >= 300  # the canary baked before the gate


def test_all_at_once(make) -> None:
    b = make(schedule=AllAtOnce(kind="all-at-once"), approval=None, bake_s=60, retention_s=600)
    b.green_ready()
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}
    b.run()
    assert b.record().live == "green"
    assert b.execution().status == "SUCCEEDED"
    assert [w for _, w in shifts(b)] == [{"green": 100, "blue": 0}]


def test_linear_steps_every_interval(make) -> None:
    b = make(schedule=Linear(kind="linear", step_percent=25, interval_s=120), approval=None, bake_s=60)
    b.green_ready()
    b.run()
    timeline = shifts(b)
    assert [w["green"] for _, w in timeline] == [25, 50, 75, 100]
    assert [t for t, _ in timeline] == [0, 120, 240, 360]
    assert all(sum(w.values()) == 100 for _, w in timeline)
    assert b.record().live == "green"


def test_linear_last_step_may_be_smaller(make) -> None:
    b = make(schedule=Linear(kind="linear", step_percent=30, interval_s=10), approval=None, bake_s=0)
    b.green_ready()
    b.run()
    assert [w["green"] for _, w in shifts(b)] == [30, 60, 90, 100]


def test_canary_without_gate_goes_straight_on(make) -> None:
    b = make(schedule=Canary(kind="canary", percent=5, bake_s=600), approval=None)
    b.green_ready()
    b.run(599)
    assert b.weights() == {"blue": 95, "green": 5}
    b.run(2)
    assert b.weights() == {"blue": 0, "green": 100}


def test_second_promotion_moves_traffic_back_to_the_idle_colour(make) -> None:
    b = make(schedule=AllAtOnce(kind="all-at-once"), approval=None, bake_s=0, retention_s=0)
    b.green_ready(release="v2")
    b.run()
    assert b.record().live == "green"
    b.clock.advance(60)
    # The next release goes to blue, the idle colour; the event need not name it.
    b.green_ready(release="v3")
    b.run()
    assert b.record().live == "blue"
    assert b.weights() == {"blue": 100, "green": 0}


def test_listener_rule_pair(make, dev_config) -> None:
    target = dev_config.promotions[0].target
    rule = target.listener_arn.replace(":listener/", ":listener-rule/") + "/0123456789abcdef"
    b = make(target=target.model_copy(update={"listener_arn": None, "rule_arn": rule}),
             schedule=AllAtOnce(kind="all-at-once"), approval=None, bake_s=0)
    b.green_ready()
    b.run()
    assert b.weights() == {"blue": 0, "green": 100}
    assert b.record().live == "green"


def test_steps_write_both_weights_in_one_call(make) -> None:
    b = make()
    calls: list[str] = []
    b.world.clients.elbv2.meta.events.register("before-call.elastic-load-balancing-v2.*",
                                               lambda model, **_: calls.append(model.name))
    b.green_ready()
    b.run(1)
    shift = [c for c in calls if c.startswith("Modify")]
    assert shift == ["ModifyListener"]


def test_gate_waits_without_a_bake_when_idle(make) -> None:
    b = make()
    b.green_ready()
    b.run()
    assert b.execution().waiting_token is not None
    b.clock.advance(timedelta(minutes=30).total_seconds())
    b.run(0)
    assert b.record().promotion.status == "awaiting-approval"
