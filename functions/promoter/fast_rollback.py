"""Time to safety: a guard alarm entering ALARM puts the traffic back on the last known-good colour before
anything else (issue 8, "Time to safety").

The pipeline's rollback comes after idempotency, alarm memory, the lock and the rate window: a dozen AWS
calls of bookkeeping before users are safe. This runs first, in the handler, for an alarm event only:

1. in parallel: the kill switch (cached in a warm function: no call) and the pair's promotion record;
2. in parallel: the traffic switch (the forward action, or the weighted records) and the health of the
   colour to go back to (never put traffic on a colour with no healthy target);
3. the write, over the forward action just read (one ModifyListener / ChangeResourceRecordSets).

So the write is the 4th AWS call of a warm function, after 3 calls in 2 round trips. Then the pipeline runs
the rollback as always (guardrails, records, workflow stopped, freeze released, audit): it finds the weights
in place, and the audit record says they were written first, with the weights they replaced.

It stands aside (the pipeline decides) whenever it is not plainly a rollback: the kill switch at `hard-stop`
(at `on` a rollback still runs), dry-run, an event that is not a transition into ALARM, stamped in the
future or before the promotion started, a promotion not in flight nor retained, weights already in place,
an unhealthy colour to go back to, or any error reading.

The pipeline calls it (`Reaction.fast_safety`) right after parsing, before idempotency and the guardrails.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from promoter.promotion_plan import FINALIZED, IN_FLIGHT, all_on
from promoter.traffic_switch import PairTraffic
from reflex_core.observability import logger
from reflex_core.promotion_config import Colour, PromotionPair
from reflex_core.runtime import Runtime
from reflex_core.state_store import PromotionRecord
from reflex_core.triggers import ALARM_DETAIL_TYPE, Trigger, TriggerError, parse_trigger

CLOCK_SKEW_S = 60.0  # an alarm stamped further ahead than this is not acted on here
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reflex-fast-rollback")
        return _pool


@dataclass(frozen=True)
class FastWrite:
    pair: str
    promotion_id: str
    alarm: str
    before: dict[str, int]
    after: dict[str, int]


def looks_like_alarm(event: Any) -> bool:
    """Cheap: only alarm deliveries are worth parsing here (workflow steps and commands are not)."""
    return isinstance(event, dict) and (event.get("detail-type") == ALARM_DETAIL_TYPE or "alarmData" in event
                                        or "Records" in event)


class FastRollback:
    def __init__(self) -> None:
        self._written: dict[str, FastWrite] = {}
        self._lock = threading.Lock()

    def run(self, event: Any, rt: Runtime[Any]) -> list[FastWrite]:
        """From a raw event (tests, tools); the pipeline calls `run_trigger` with the trigger it parsed."""
        if not looks_like_alarm(event):
            return []
        try:
            trigger = parse_trigger(event, rt.clock.now())
        except TriggerError:
            return []  # the pipeline rejects it and says why
        return self.run_trigger(trigger, rt)

    def run_trigger(self, trigger: Trigger, rt: Runtime[Any]) -> list[FastWrite]:
        now = rt.clock.now()
        alarm = trigger.alarm
        if alarm is None or alarm.state != "ALARM" or alarm.previous_state == "ALARM":
            return []
        if alarm.changed_at.timestamp() > now.timestamp() + CLOCK_SKEW_S or rt.config.dry_run:
            return []
        pairs = [p for p in rt.config.promotions if p.guard_alarms.matches(alarm.name, None) and not p.dry_run]
        if not pairs:
            return []
        pool = _executor()
        kill = pool.submit(rt.kill_switch.state)
        records = {p.name: pool.submit(rt.store.promotion_record, p.name) for p in pairs}
        written: list[FastWrite] = []
        try:
            if kill.result().blocks(safety=True):  # `hard-stop` (or unreadable, failing closed to it)
                return []
            for pair in pairs:
                done = self._pair(pair, records[pair.name].result(), alarm.name, alarm.changed_at, now, rt, pool)
                if done is not None:
                    written.append(done)
        except Exception:  # noqa: BLE001 - never in the way: the pipeline's rollback follows and reports errors
            logger.exception("fast rollback stood aside after an error; the pipeline's rollback follows")
        return written

    def _pair(self, pair: PromotionPair, record: PromotionRecord, alarm: str, changed_at: datetime, now: datetime,
              rt: Runtime[Any], pool: ThreadPoolExecutor) -> FastWrite | None:
        p = record.promotion
        if p is None or changed_at.timestamp() < p.started_at:
            return None
        retained = p.status == FINALIZED and p.retention_until is not None and now.timestamp() < p.retention_until
        if p.status not in IN_FLIGHT and not retained:
            return None
        back: Colour = "blue" if p.from_colour == "blue" else "green"
        target = all_on(back)
        traffic = PairTraffic(rt.clients, pair)
        read = pool.submit(traffic.switch.snapshot)
        health = pool.submit(traffic.healthy, back)
        current, snapshot = read.result()
        if current == target or health.result() == 0:
            return None
        traffic.switch.write_over(target, snapshot)
        done = FastWrite(pair=pair.name, promotion_id=p.id, alarm=alarm, before=current, after=target)
        with self._lock:
            self._written[pair.name] = done
        logger.info("traffic back on the last known-good colour first", extra={"pair": pair.name, "to": back})
        return done

    def take(self, pair: str, promotion_id: str, alarm: str | None) -> FastWrite | None:
        """The write made for this pair's promotion by this alarm, once (the rollback's audit reports it)."""
        with self._lock:
            done = self._written.get(pair)
            if done is None or done.promotion_id != promotion_id or done.alarm != alarm:
                return None
            del self._written[pair]
            return done
