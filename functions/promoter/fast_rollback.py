"""Time to safety: a guard alarm entering ALARM puts the traffic back on the last known-good colour before
anything else (issue 8, "Time to safety").

The pipeline's rollback comes after idempotency, alarm memory, the lock and the rate window: a dozen AWS
calls of bookkeeping before users are safe. This runs first, for an alarm event only (the pipeline calls it,
`Reaction.fast_safety`, right after parsing, once its own kill-switch check has passed):

1. the kill switch (cached in a warm function: no call) and the pair's promotion record: from this
   container's own recent observation when it is provably still good enough to act on (`RecordCache`),
   otherwise read (one call, in parallel with the kill switch);
2. in parallel: the traffic switch (the forward action, or the weighted records) and the health of the
   colour to go back to (never put traffic on a colour with no healthy target);
3. the write, over the forward action just read (one ModifyListener / ChangeResourceRecordSets).

In a warm function that ran one of the promotion's steps less than `RecordCache.ttl_s` before, the write is
the 4th AWS call at most (kill switch, forward action, health), the 3rd with the kill switch still cached.
Then the pipeline runs the rollback as always (guardrails, records, workflow stopped, freeze released,
audit): it reads the record afresh, finds the weights in place, and the audit record says they were written
first, with the weights they replaced.

It stands aside (the pipeline decides) whenever it is not plainly a rollback: the kill switch at `hard-stop`
(at `on` a rollback still runs), dry-run, an event that is not a transition into ALARM, stamped in the
future or before the promotion started, a promotion not in flight nor retained, weights already in place,
an unhealthy colour to go back to, or any error reading.

Why a remembered record is safe to act on (docs/architecture.md, "Time to safety"): the write only ever puts
all the traffic on the promotion's `from_colour`. That colour stops being the known-good one only when some
promotion *finalizes* (`live` changes only then; a rollback or abort leaves it, and the next promotion
starts from it again). A remembered record is used only if, when this container read or wrote it, its
promotion was in flight and had not yet written its last step (the step to 100 %); the forward action read
now shows exactly the weights it had recorded then; and less than `ttl_s` has passed, which is less than the
pair's final bake. Finalizing needs the last step written *after* that observation, then the whole final
bake (a Step Functions Wait), then a check and the finalize step: it cannot have happened within `ttl_s`. So
`from_colour` is still the known-good colour, and its health is read now, as always.
"""

from __future__ import annotations

import copy
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
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
# A remembered promotion record is acted on for at most this long, and never for more than RECORD_BAKE_FRACTION
# of the pair's final bake (the shortest time in which the known-good colour could change; see the docstring).
RECORD_CACHE_MAX_S = 120.0
RECORD_BAKE_FRACTION = 0.75
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
    remembered: bool = False  # acted on this container's remembered record (no read before the write)


@dataclass(frozen=True)
class _Seen:
    record: PromotionRecord
    at: float  # the clock before the read (or conditional write) that returned it: the record was current then


class RecordCache:
    """The promotion records this container last read or wrote, per state store (one per runtime: a test's
    or the simulator's fresh world starts empty) and pair; `usable` says when one may be acted on unread."""

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[Any, dict[str, _Seen]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def observe(self, store: Any, record: PromotionRecord, at: float) -> None:
        with self._lock:
            pairs = self._seen.setdefault(store, {})
            last = pairs.get(record.pair)
            if last is not None and (record.version, at) < (last.record.version, last.at):
                return  # an older reading finishing late
            pairs[record.pair] = _Seen(copy.deepcopy(record), at)

    def forget(self, store: Any | None = None) -> None:
        with self._lock:
            if store is None:
                self._seen.clear()
            else:
                self._seen.pop(store, None)

    @staticmethod
    def ttl_s(pair: PromotionPair) -> float:
        return min(RECORD_CACHE_MAX_S, RECORD_BAKE_FRACTION * pair.bake_s)

    def usable(self, store: Any, pair: PromotionPair, now: float) -> PromotionRecord | None:
        """The remembered record, if acting on it is safe: read or written less than `ttl_s` ago (and not in
        the future: a clock that went back proves nothing), its promotion in flight and short of its last
        step. The caller must also find the weights it recorded still in place."""
        with self._lock:
            seen = self._seen.get(store, {}).get(pair.name)
        if seen is None or not 0 <= now - seen.at < self.ttl_s(pair):
            return None
        p = seen.record.promotion
        if p is None or p.status not in IN_FLIGHT or not p.weights or p.step >= len(pair.steps()) - 1:
            return None
        if p.weights == all_on(p.to_colour):
            return None
        return copy.deepcopy(seen.record)


def looks_like_alarm(event: Any) -> bool:
    """Cheap: only alarm deliveries are worth parsing here (workflow steps and commands are not)."""
    return isinstance(event, dict) and (event.get("detail-type") == ALARM_DETAIL_TYPE or "alarmData" in event
                                        or "Records" in event)


class FastRollback:
    def __init__(self) -> None:
        self._written: dict[str, FastWrite] = {}
        self._lock = threading.Lock()
        self.records = RecordCache()

    def read_record(self, rt: Runtime[Any], pair: str) -> PromotionRecord:
        """The pair's record, read (consistently) and remembered."""
        at = rt.clock.now().timestamp()
        record = rt.store.promotion_record(pair)
        self.records.observe(rt.store, record, at)
        return record

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
        remembered = {p.name: self.records.usable(rt.store, p, now.timestamp()) for p in pairs}
        records: dict[str, Future[PromotionRecord]] = {
            p.name: pool.submit(self.read_record, rt, p.name) for p in pairs if remembered[p.name] is None}
        written: list[FastWrite] = []
        try:
            if kill.result().blocks(safety=True):  # `hard-stop` (or unreadable, failing closed to it)
                return []
            for pair in pairs:
                cached = remembered[pair.name]
                record = cached if cached is not None else records[pair.name].result()
                done = self._pair(pair, record, cached is not None, alarm.name, alarm.changed_at, now, rt, pool)
                if done is not None:
                    written.append(done)
        except Exception:  # noqa: BLE001 - never in the way: the pipeline's rollback follows and reports errors
            logger.exception("fast rollback stood aside after an error; the pipeline's rollback follows")
        return written

    def _pair(self, pair: PromotionPair, record: PromotionRecord, remembered: bool, alarm: str, changed_at: datetime,
              now: datetime, rt: Runtime[Any], pool: ThreadPoolExecutor) -> FastWrite | None:
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
        if remembered and current != p.weights:
            # Not the weights the remembered record wrote: the promotion moved on since (or someone else moved
            # the traffic). Read the record and decide on it (a few calls more, only in this case).
            health.cancel()
            return self._pair(pair, self.read_record(rt, pair.name), False, alarm, changed_at, now, rt, pool)
        if current == target or health.result() == 0:
            return None
        traffic.switch.write_over(target, snapshot)
        done = FastWrite(pair=pair.name, promotion_id=p.id, alarm=alarm, before=current, after=target,
                         remembered=remembered)
        with self._lock:
            self._written[pair.name] = done
        logger.info("traffic back on the last known-good colour first",
                    extra={"pair": pair.name, "to": back, "record": "remembered" if remembered else "read"})
        return done

    def take(self, pair: str, promotion_id: str, alarm: str | None) -> FastWrite | None:
        """The write made for this pair's promotion by this alarm, once (the rollback's audit reports it)."""
        with self._lock:
            done = self._written.get(pair)
            if done is None or done.promotion_id != promotion_id or done.alarm != alarm:
                return None
            del self._written[pair]
            return done
