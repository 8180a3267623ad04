"""The mover: moves hash buckets of a shard set from one PostgreSQL shard to another, online, exactly once.

A move is a record (shard_map.MoveRecord) advanced one step at a time by `Mover.step(move_id)`; each
step reads the record, does the work of its phase, and saves the next phase conditionally on the
record's version. Every step is idempotent: a crash anywhere, a timeout or a duplicate delivery re-runs
the phase's work harmlessly (CREATE ... when absent, fences set to a state, copy chunks committed with
their cursor in the target's own transaction, map writes conditional on its version and checked for
"already done by this move").

    block_writes:  claimed -> prepared -> fenced -> copied -> verified -> switched -(grace)-> done
    online:        claimed -> prepared -> replicating -> caught_up -> fenced -> copied -> verified
                   -> switched -(grace, reverse replication)-> done
    abort, a verification mismatch or a catch-up timeout:  ... -> rolling_back -> rolled_back

* prepare: install the reflex schema, fence rows and triggers on both shards (pg.py); the target's fence
  for the moving buckets is `incoming` (applications are refused there); leftovers of an earlier attempt
  in the target are deleted.
* online replicate: a publication on the source filtered to the moving buckets (row filter = the bucket
  function), a slot, a subscription on the target (initial copy, then changes).
* fence: the source's fence rows become `fenced` (waits for in-flight writers; later writers are refused
  with SQLSTATE RX409). The fence's duration is measured from here to the switch.
* copy (block_writes): binary COPY streamed from the source to the target, chunked by primary key,
  each chunk committed with its cursor in reflex.copy_progress; online: a marker row inserted on the
  source after the fence and awaited on the target (apply is in commit order: when it is there, so is
  everything before it).
* verify: per bucket, row count and a checksum (sum of md5 of each row's text) on both sides.
* switch: forward replication torn down, reverse replication (target -> source) started (online),
  target fence `open`, map updated (conditional, versioned), source fence `moved`, ShardMoved published.
* after the grace period: the point of no return marked on the source (reflex.copy_progress, tbl `#cleanup`),
  reverse replication dropped, the source rows deleted in batches (as a replica when allowed, children
  first), the map settled; done.
* rollback (any time before the cleanup starts): the map, the fences and the rows go back to the source; after
  a switch the target is fenced first and the source brought current (reverse replication drained, or, for
  block_writes, the rows copied back; then marked `#source-current` so a retry skips it, a mark kept until
  the map is back); before a switch both
  streams (the reverse one too) are torn down before the target's copy is deleted. Past the point of no return
  (the `#cleanup` mark, or the map settled) an abort is refused or ignored (recorded) and the move goes on to
  done: a rollback then would delete the only copy left. A rollback after the switch announces the buckets back
  on the source (the reaction: ShardMoved, source and target swapped, `rolled_back: true`) before it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reflex_core.sharding_config import Shard, ShardSet
from shards import pg
from shards.buckets import bucket_filter_sql, bucket_sql, quote_ident, ranges
from shards.shard_map import MAP_ITEM_BUDGET, BucketState, MapConflict, MoveRecord, ShardMap, ShardMapStore

ACTIVE_PHASES = ("claimed", "prepared", "replicating", "caught_up", "fenced", "copied", "verified", "switched",
                 "rolling_back")
MARKER_WAIT_S = 30.0
FENCED_CHAIN = ("fenced", "copied", "verified")
CLEANUP_MARK = "#cleanup"  # reflex.copy_progress.tbl on the source: the deletion of the moved rows has started
CURRENT_MARK = "#source-current"  # ... on the source: a rollback after the switch brought it current
CATCH_UP_POLL_S = 1.0
# Every output setting the text of a row depends on (the verification hashes ROW(...)::text on both shards, and
# the copy's resume cursor is a primary key's text): pinned in every mover session, whatever the database's or
# the role's defaults (ALTER DATABASE ... SET IntervalStyle / bytea_output ...).
SESSION_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = 3",
                    "SET IntervalStyle = 'postgres'", "SET bytea_output = 'hex'")


class MoveRefused(ValueError):
    """A move that must not start (or a command on a move that cannot apply); `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class _OutOfBudget(Exception):
    """The step's time budget ran out between two committed copy chunks: the next step resumes."""


class InjectedCrash(RuntimeError):
    """Raised by a test's crash hook at a named point."""


@dataclass
class StepResult:
    move_id: str
    phase: str
    wait_s: float = 0.0
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.phase in ("done", "rolled_back")

    def to_dict(self) -> dict[str, Any]:
        return {"move_id": self.move_id, "phase": self.phase, "wait_s": self.wait_s, "done": self.done,
                "detail": self.detail}


def _short(*parts: str) -> str:
    return hashlib.md5("/".join(parts).encode(), usedforsecurity=False).hexdigest()[:12]


class Mover:
    def __init__(self, shard_set: ShardSet, store: ShardMapStore, connect: pg.Connect, *,
                 conninfo: Callable[[Shard], str] | None = None, now: Callable[[], float] = time.time,
                 on_switched: Callable[[MoveRecord], None] | None = None,
                 on_switched_back: Callable[[MoveRecord], None] | None = None,
                 crash: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 step_budget_s: float | None = None) -> None:
        self.set = shard_set
        self.store = store
        self._connect = connect
        self._conninfo = conninfo or pg.replication_conninfo
        self._now = now
        self._on_switched = on_switched
        # A rollback after the switch puts the buckets back on the source: told to `on_switched_back` (the move's
        # record), or, without one, to `on_switched` as a move from the target back to the source (a copy of the
        # record with source and target swapped, never saved).
        self._on_switched_back = on_switched_back
        self._crash = crash or (lambda point: None)
        self._sleep = sleep
        # A step that copies stops after this long (between committed chunks) and the next one resumes: a
        # Lambda step stays well inside its timeout and the set's lock lease whatever the bucket's size.
        self._budget = step_budget_s
        self._deadline: float | None = None
        self._open: dict[str, psycopg.Connection[Any]] = {}
        self._in_step = False

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _conn(self, shard_name: str) -> Iterator[psycopg.Connection[Any]]:
        shard = self.set.shard(shard_name)
        if shard is None:
            raise MoveRefused("shard", f"no shard {shard_name!r} in set {self.set.name}")
        cached = self._open.get(shard_name)
        if cached is not None and not cached.closed:
            yield cached  # one connection per shard for the whole step (closed when the step ends)
            return
        conn = self._connect(shard)
        for setting in SESSION_SETTINGS:
            conn.execute(setting)
        if self._in_step:
            self._open[shard_name] = conn
            yield conn
            return
        try:
            yield conn
        finally:
            conn.close()

    def _close_all(self) -> None:
        for conn in self._open.values():
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._open.clear()

    def map(self) -> ShardMap:
        return self.store.ensure(self.set.name, self.set.buckets, self.set.key.type, self.set.initial_assignment())

    def _update_map(self, change: str, edit: Callable[[ShardMap], bool]) -> ShardMap:
        """Apply `edit` to the current map and save it; `edit` returns False when there is nothing to do."""
        for _ in range(20):
            current = self.map()
            if not edit(current):
                return current
            try:
                return self.store.save(current, change)
            except MapConflict:
                continue
        raise MapConflict(f"shard map {self.set.name}: too many concurrent changes")

    def _filter(self, key_column: str, buckets: list[int], *, row_filter: bool = False) -> str:
        return bucket_filter_sql(quote_ident(key_column), self.set.buckets, self.set.key.type, buckets,
                                 row_filter=row_filter)

    def _save(self, move: MoveRecord, phase: str, note: str) -> MoveRecord:
        move.phase = phase
        return self.store.save_move(move, note)

    def load(self, move_id: str) -> MoveRecord:
        move = self.store.load_move(self.set.name, move_id)
        if move is None:
            raise MoveRefused("move_id", f"no move {move_id!r} in set {self.set.name}")
        return move

    # ------------------------------------------------------------------ start
    def refusal(self, buckets: list[int], source: str, target: str,
                current: ShardMap | None = None) -> MoveRefused | None:
        """Why a new move of these buckets from source to target would be refused now (None: it would not).
        The planner asks before it plans a move; start() asks again before it claims the buckets."""
        current = current or self.map()
        src, tgt = self.set.shard(source), self.set.shard(target)
        if src is None:
            return MoveRefused("source", f"no shard {source!r} in set {self.set.name}")
        if tgt is None:
            return MoveRefused("target", f"no shard {target!r} in set {self.set.name}")
        if source == target:
            return MoveRefused("target", "the target is the source")
        if not tgt.accepting:
            return MoveRefused("target", f"shard {target} does not accept buckets (accepting: false)")
        if not buckets:
            return MoveRefused("buckets", "no bucket to move")
        bad = [b for b in buckets if not 0 <= b < self.set.buckets]
        if bad:
            return MoveRefused("buckets", f"outside 0-{self.set.buckets - 1}: {bad[:10]}")
        wanted = sorted(set(buckets))
        busy = [b for b in wanted if b in current.states]
        if busy:
            return MoveRefused("buckets", f"already moving: {ranges(busy)}")
        elsewhere = [b for b in wanted if current.owners[b] != source]
        if elsewhere:
            return MoveRefused("buckets", f"not on {source}: {ranges(elsewhere)}")
        running = self.store.moves(self.set.name)
        for shard in (src, tgt):
            n = sum(1 for m in running if shard.name in (m.source, m.target))
            if n >= shard.max_concurrent_moves:
                return MoveRefused("target" if shard is tgt else "source",
                                   f"shard {shard.name} already runs {n} move(s) "
                                   f"(max_concurrent_moves {shard.max_concurrent_moves})")
        return None

    def start(self, buckets: list[int], source: str, target: str, *, move_id: str | None = None,
              mode: str | None = None, reason: str = "") -> MoveRecord:
        """Claim the buckets in the map and create the move record. Idempotent for a given move_id."""
        move_id = move_id or uuid.uuid4().hex[:16]
        existing = self.store.load_move(self.set.name, move_id)
        if existing is not None:
            return existing
        current = self.map()
        mine = {b for b, s in current.states.items() if s.move_id == move_id}
        if not mine:
            refused = self.refusal(buckets, source, target, current)
            if refused is not None:
                raise refused
        wanted = sorted(set(buckets))
        if not mine:
            # The map must hold the claim and what its switch writes (owners rewritten): refused here, before
            # anything is claimed, rather than by the switch's map write once the source is fenced.
            size = current.claim_bytes([(move_id, wanted, source, target)])
            if size > MAP_ITEM_BUDGET:
                raise MoveRefused("buckets", f"moving {len(wanted)} bucket(s) would make the shard map a {size:,}-"
                                             f"byte item once claimed or switched (at most {MAP_ITEM_BUDGET:,}); "
                                             "move fewer or contiguous buckets")
        if not mine and (mode or self.set.transfer) == "online":
            refused = self._online_refusal(source)
            if refused is not None:
                raise refused

        def claim(m: ShardMap) -> bool:
            if all(m.states.get(b) is not None and m.states[b].move_id == move_id for b in wanted):
                return False
            for b in wanted:
                if b in m.states and m.states[b].move_id != move_id:
                    raise MapConflict(f"bucket {b} was claimed by move {m.states[b].move_id}")
                if m.owners[b] != source:
                    raise MapConflict(f"bucket {b} is no longer on {source}")
                m.states[b] = BucketState("copying", move_id, source, target)
            return True

        self._update_map(f"move {move_id}: claim {ranges(wanted)} {source} -> {target}", claim)
        self._crash("start:claimed")
        now = self._now()
        move = MoveRecord(id=move_id, set_name=self.set.name, buckets=wanted, source=source, target=target,
                          mode=mode or self.set.transfer, created_at=now, reason=reason)
        try:
            return self.store.save_move(move, f"claimed {ranges(wanted)}")
        except MapConflict:
            return self.load(move_id)

    # ------------------------------------------------------------------ step
    def step(self, move_id: str) -> StepResult:
        move = self.load(move_id)
        if move.finished:
            return StepResult(move.id, move.phase, detail="finished")
        if move.abort_requested and move.phase in ("switched", "rolling_back"):
            why = self._past_return(move)
            if why:  # the source rows are (being) deleted: rolling back would delete the only copy left
                refused, move.abort_requested = move.abort_requested, ""
                move = self._save(move, "switched", f"abort ignored ({refused}): {why}; the move goes on to done "
                                                    "(move the buckets back with a new move)")
        if move.abort_requested and move.phase != "rolling_back" and move.phase in ACTIVE_PHASES:
            move = self._save(move, "rolling_back", f"abort: {move.abort_requested}")
        if move.paused and move.phase not in ("fenced", "copied", "verified", "rolling_back"):
            if move.phase == "switched":
                self._announce_switch(move)  # paused or not, whoever caches the buckets hears of the switch
            return StepResult(move.id, move.phase, wait_s=30.0, detail="paused")
        handler = getattr(self, f"_from_{move.phase}")
        self._deadline = time.monotonic() + self._budget if self._budget else None
        self._in_step = True
        try:
            result: StepResult = handler(move)
            self._crash(f"step:{result.phase}")
            # Once fenced, go straight on (copy or final catch-up, verify, switch) in this invocation: every
            # step between the fence and the switch is write unavailability for the moving buckets.
            while result.phase in FENCED_CHAIN and not result.wait_s:
                move = self.load(move_id)
                if move.abort_requested:
                    break
                result = getattr(self, f"_from_{move.phase}")(move)
                self._crash(f"step:{result.phase}")
        except _OutOfBudget:
            return StepResult(move_id, self.load(move_id).phase, detail="copy continues in the next step")
        finally:
            self._in_step = False
            self._close_all()
        return result

    def run(self, move_id: str, *, max_steps: int = 1000, wait: bool = True) -> StepResult:
        """Step until finished (locally, tests, the simulator); honours waits (grace, catch-up polls)."""
        result = StepResult(move_id, "?")
        for _ in range(max_steps):
            result = self.step(move_id)
            if result.done:
                return result
            if result.wait_s and wait:
                self._sleep(result.wait_s)
            elif result.wait_s and result.phase == "switched":
                return result
        return result

    def request_abort(self, move_id: str, reason: str) -> MoveRecord:
        move = self.load(move_id)
        if move.phase == "done":
            raise MoveRefused("move_id", f"move {move_id} is done (source rows deleted): move the buckets back "
                                         "with a new move")
        if move.finished:
            return move
        why = self._past_return(move)
        if why:
            # Refused (and recorded): the source rows are deleted or being deleted, the move can only go forward.
            # Not raised: an abort preempts the set's lock and may land while the step finishing the move runs.
            return self.store.save_move(move, f"abort refused ({reason or 'abort requested'}): {why}; move the "
                                              "buckets back with a new move")
        move.abort_requested = reason or "abort requested"
        return self.store.save_move(move, f"abort requested: {move.abort_requested}")

    def set_paused(self, move_id: str, paused: bool) -> MoveRecord:
        move = self.load(move_id)
        if move.finished:
            raise MoveRefused("move_id", f"move {move_id} is {move.phase}")
        move.paused = paused
        return self.store.save_move(move, "paused" if paused else "resumed")

    # ------------------------------------------------------------------ phases
    def _from_claimed(self, move: MoveRecord) -> StepResult:
        owners = self.map().owners
        with self._conn(move.source) as src, self._conn(move.target) as tgt:
            for conn, shard in ((src, move.source), (tgt, move.target)):
                pg.install(conn, self.set, {b for b, s in enumerate(owners) if s == shard})
                for t in self.set.tables:
                    _, pk = pg.table_columns(conn, t.name)
                    if not pk:
                        raise MoveRefused("tables", f"{t.name} has no primary key on {shard}")
            if move.mode == "online":
                refused = self._online_refusal(move.source, src)
                if refused is not None:  # (start checks it too): roll back before anything is published
                    move.error = str(refused)
                    return StepResult(move.id, self._save(move, "rolling_back", move.error).phase)
            pg.set_fence(tgt, self.set.name, move.buckets, "incoming", move.id)
            self._delete_rows(tgt, move.buckets)
            tgt.execute("DELETE FROM reflex.copy_progress WHERE move_id = %s", (move.id,))
        self._crash("prepare:done")
        return StepResult(move.id, self._save(move, "prepared", "prepared both shards").phase)

    def _online_refusal(self, source: str, conn: psycopg.Connection[Any] | None = None) -> MoveRefused | None:
        """Why the `online` mode cannot move this set's tables from `source` (None: it can).

        The publication filters each table's rows on the shard key; PostgreSQL requires a row filter's columns
        of a publication publishing UPDATE and DELETE to be in the table's replica identity (its primary key by
        default), and otherwise refuses every UPDATE and DELETE of the table, every bucket's, while the
        publication exists. Such a table is refused here, before anything is published: use block_writes, or
        make the key part of the primary key (or of a REPLICA IDENTITY index)."""
        if conn is None:
            try:
                with self._conn(source) as c:
                    return self._online_refusal(source, c)
            except psycopg.Error:
                return None  # the prepare step checks again, with the schema it needs
        for t in self.set.tables:
            row = conn.execute("SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)",
                               (quote_ident(t.name),)).fetchone()
            if row is None:
                continue  # a missing table: the prepare step names it
            ident = str(row[0])
            if ident == "f":
                continue
            cols = [] if ident == "n" else [r[0] for r in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND "
                + ("i.indisprimary" if ident == "d" else "i.indisreplident"), (quote_ident(t.name),)).fetchall()]
            if t.key_column not in cols:
                return MoveRefused("tables", f"{t.name}: its shard key column {t.key_column} is not in its replica "
                                             f"identity (the primary key) on {source}; the online mode's row filter "
                                             "would refuse every UPDATE and DELETE of the table: move it with "
                                             "mode block_writes, or add the key to the primary key")
        return None

    def _from_prepared(self, move: MoveRecord) -> StepResult:
        if move.mode == "block_writes":
            self._fence(move)
            return StepResult(move.id, move.phase)
        self._replicate(move, move.source, move.target, forward=True)
        return StepResult(move.id, self._save(move, "replicating", "replication started").phase)

    def _from_replicating(self, move: MoveRecord) -> StepResult:
        names = self._names(move, forward=True)
        with self._conn(move.target) as tgt:
            row = tgt.execute(
                "SELECT count(*), count(*) FILTER (WHERE r.srsubstate <> 'r') FROM pg_subscription_rel r "
                "JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s", (names["sub"],)).fetchone()
        total, pending = (int(row[0]), int(row[1])) if row else (0, 0)
        if total == len(self.set.tables) + 1 and pending == 0:
            return StepResult(move.id, self._save(move, "caught_up", "initial copy done, streaming").phase)
        if self._now() - move.created_at > self.set.catch_up_timeout_s:
            move.error = f"catch-up timeout after {self.set.catch_up_timeout_s}s"
            return StepResult(move.id, self._save(move, "rolling_back", move.error).phase)
        return StepResult(move.id, move.phase, wait_s=CATCH_UP_POLL_S, detail=f"{pending}/{total} tables syncing")

    def _from_caught_up(self, move: MoveRecord) -> StepResult:
        if self.set.online_verify == "snapshot" and not move.verify:
            return self._verify_on_snapshots(move)
        self._fence(move)
        return StepResult(move.id, move.phase)

    def _verify_on_snapshots(self, move: MoveRecord) -> StepResult:
        """Online mode: verify before the switch without holding the switch's fence for it (VDiff's way).

        A brief fence of the source's buckets (writes refused, routers retry) makes both sides comparable: the
        source snapshot is taken once the fence holds (no write to the buckets can land after it), the target
        snapshot once a marker inserted after the fence has been applied there (replication applies in commit
        order, so everything before it is in). The fence is lifted, writes resume, and the buckets are compared
        inside the two REPEATABLE READ snapshots while traffic continues. A mismatch rolls back before any
        switch. The switch's own fence then only waits for the final catch-up. Every step is idempotent: a crash
        anywhere here repeats it from the start (the source fence is set again, then lifted)."""
        started = time.time()
        snaps: dict[str, psycopg.Connection[Any]] = {}
        reached = False
        try:
            with self._conn(move.source) as src:
                pg.set_fence(src, self.set.name, move.buckets, "fenced", move.id,
                             lock_timeout_ms=self.set.fence_lock_timeout_ms)
            self._crash("verify:fenced")
            snaps["source"] = self._snapshot(move.source)
            with self._conn(move.source) as src, self._conn(move.target) as tgt:
                reached = self._await_marker(src, tgt, move.id, MARKER_WAIT_S)
            if reached:
                snaps["target"] = self._snapshot(move.target)
        except BaseException as err:
            for conn in snaps.values():
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            if not isinstance(err, InjectedCrash):  # a dead process lifts nothing: its retry does
                with contextlib.suppress(psycopg.Error), self._conn(move.source) as src:
                    pg.set_fence(src, self.set.name, move.buckets, "open", None)
            raise
        with self._conn(move.source) as src:
            pg.set_fence(src, self.set.name, move.buckets, "open", None)
        fence_ms = round((time.time() - started) * 1000, 1)
        try:
            if not reached:
                return StepResult(move.id, move.phase, wait_s=1.0, detail="catch-up for the verification not "
                                                                          "reached yet")
            self._crash("verify:pinned")
            report = self._verify(snaps["source"], snaps["target"], move.buckets)
        finally:
            for conn in snaps.values():
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        move.verify = report | {"on": "snapshots, before the switch", "fence_ms": fence_ms}
        move.verify_fence_ms = fence_ms
        if report["mismatched_buckets"]:
            move.error = f"verification mismatch in buckets {ranges(report['mismatched_buckets'])}"
            return StepResult(move.id, self._save(move, "rolling_back", move.error).phase)
        # The switch's fence follows in the next step (a second apart: the stream keeps up meanwhile).
        return StepResult(move.id, self._save(move, "caught_up", f"verified {report['rows']} rows on snapshots "
                                                                 f"(fence {fence_ms} ms); streaming").phase,
                          wait_s=1.0, detail="verified on snapshots; the switch follows")

    def _snapshot(self, shard_name: str) -> psycopg.Connection[Any]:
        """A connection of its own holding a REPEATABLE READ, read-only snapshot taken now (the caller closes it)."""
        shard = self.set.shard(shard_name)
        assert shard is not None
        conn = self._connect(shard)
        try:
            for setting in SESSION_SETTINGS:
                conn.execute(setting)  # the row text the checksum hashes must read the same on both sides
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute("SELECT 1")  # the transaction's snapshot is taken by its first query
        except BaseException:
            conn.close()
            raise
        return conn

    def _fence(self, move: MoveRecord) -> None:
        if move.fence_started_at is None:
            move.fence_started_at = time.time()  # wall time: the fence is real whatever clock drives the grace
            move = self.store.save_move(move)
        with self._conn(move.source) as src:
            pg.set_fence(src, self.set.name, move.buckets, "fenced", move.id,
                         lock_timeout_ms=self.set.fence_lock_timeout_ms)
        self._crash("fence:db")

        def mark(m: ShardMap) -> bool:
            changed = False
            for b in move.buckets:
                s = m.states.get(b)
                if s is not None and s.move_id == move.id and s.state == "copying":
                    s.state = "fenced"
                    changed = True
            return changed

        self._update_map(f"move {move.id}: fence {ranges(move.buckets)}", mark)
        self._save(move, "fenced", "source fenced")

    def _from_fenced(self, move: MoveRecord) -> StepResult:
        if move.mode == "block_writes":
            with self._conn(move.source) as src, self._conn(move.target) as tgt:
                rows = self._copy(src, tgt, move.buckets, move.id)
            move.copy_rows = rows
            return StepResult(move.id, self._save(move, "copied", f"copied {sum(rows.values())} rows").phase)
        with self._conn(move.source) as src, self._conn(move.target) as tgt:
            if not self._await_marker(src, tgt, move.id, MARKER_WAIT_S):
                return StepResult(move.id, move.phase, wait_s=1.0, detail="final catch-up not reached yet")
        return StepResult(move.id, self._save(move, "copied", "final catch-up reached").phase)

    def _from_copied(self, move: MoveRecord) -> StepResult:
        if move.mode == "online" and self.set.online_verify == "snapshot" and move.verify:
            # Verified before this fence (_verify_on_snapshots); what changed since came through the same stream,
            # and the final catch-up (the marker) says all of it is applied.
            return StepResult(move.id, self._save(move, "verified", "final catch-up reached; verified on "
                                                                    "snapshots before the fence").phase)
        with self._conn(move.source) as src, self._conn(move.target) as tgt:
            report = self._verify(src, tgt, move.buckets)
        move.verify = report
        if report["mismatched_buckets"]:
            move.error = f"verification mismatch in buckets {ranges(report['mismatched_buckets'])}"
            return StepResult(move.id, self._save(move, "rolling_back", move.error).phase)
        return StepResult(move.id, self._save(move, "verified", f"verified {report['rows']} rows").phase)

    def _from_verified(self, move: MoveRecord) -> StepResult:
        if move.mode == "online":
            # The forward stream stops (nothing is left in it: the source is fenced and drained) before the
            # reverse one starts, so a change never travels back and forth; it is dropped after the switch.
            self._stop_stream(move, forward=True)
            self._replicate(move, move.target, move.source, forward=False)
        self._crash("switch:replication")
        with self._conn(move.target) as tgt:
            pg.set_fence(tgt, self.set.name, move.buckets, "open", move.id)

        def switch(m: ShardMap) -> bool:
            changed = False
            for b in move.buckets:
                s = m.states.get(b)
                if s is not None and s.move_id == move.id and s.state != "switched":
                    m.owners[b] = move.target
                    s.state = "switched"
                    changed = True
            return changed

        self._update_map(f"move {move.id}: switch {ranges(move.buckets)} to {move.target}", switch)
        now = self._now()
        if move.switched_at is None:
            move.switched_at = now
            wall = time.time()
            move.fence_ms = round((wall - (move.fence_started_at or wall)) * 1000, 1)
            move.grace_until = now + self.set.grace_period_s
        self._crash("switch:map")
        with self._conn(move.source) as src:
            pg.set_fence(src, self.set.name, move.buckets, "moved", move.id)
        if move.mode == "online":
            self._teardown(move, forward=True)
        move = self._save(move, "switched", f"switched to {move.target}; fence {move.fence_ms} ms")
        move = self._announce_switch(move)
        return StepResult(move.id, move.phase, wait_s=max(0.0, (move.grace_until or now) - now))

    def _announce_switch(self, move: MoveRecord) -> MoveRecord:
        """`on_switched` (the reaction publishes ShardMoved) at least once per switch: called again by every later
        step until it has returned once (recorded as `moved_published`), whatever failed in between (the publish,
        the step right after the switch was saved)."""
        if self._on_switched is None or move.moved_published or move.switched_at is None:
            return move
        self._on_switched(move)
        if not move.moved_published:
            move.moved_published = True
            move = self._save(move, move.phase, "ShardMoved published")
        return move

    def _announce_back(self, move: MoveRecord) -> MoveRecord:
        """A rollback of a switched move: the map names the source again, and whoever was told of the switch
        (ShardMoved: caches dropped per bucket, entries cached from the target since) is told the buckets went
        back. At least once: the rollback is saved `rolled_back` only after this returned (a retry announces
        again), whatever the forward announcement's fate (announcing a way back is harmless). A switch whose own
        announcement had not gone out yet is not announced after the fact: the way back drops the same tags and
        routers re-read the map on either event, and the rollback does not wait on news of a state it undoes."""
        if move.switched_at is None or move.back_published:
            return move
        if self._on_switched_back is not None:
            self._on_switched_back(move)
        elif self._on_switched is not None:
            self._on_switched(dataclasses.replace(move, source=move.target, target=move.source,
                                                  history=list(move.history)))
        else:
            return move
        move.back_published = True
        return self._save(move, move.phase, f"announced the buckets back on {move.source}")

    def _from_switched(self, move: MoveRecord) -> StepResult:
        move = self._announce_switch(move)
        now = self._now()
        if move.grace_until is not None and now < move.grace_until:
            return StepResult(move.id, move.phase, wait_s=move.grace_until - now, detail="grace period")
        with self._conn(move.source) as src:
            # The point of no return, recorded on the source before anything of it goes (the reverse stream, then
            # the rows): from here a rollback would delete the only copy left, so an abort is refused or ignored
            # (_past_return) and the move only goes forward to done.
            src.execute("INSERT INTO reflex.copy_progress (move_id, tbl, done) VALUES (%s, %s, true) "
                        "ON CONFLICT DO NOTHING", (move.id, CLEANUP_MARK))
        self._crash("cleanup:started")
        if move.mode == "online":
            self._teardown(move, forward=False)
        with self._conn(move.source) as src:
            deleted = self._delete_rows(src, move.buckets)
        self._crash("cleanup:deleted")
        with self._conn(move.target) as tgt:
            tgt.execute("DELETE FROM reflex.copy_progress WHERE move_id LIKE %s", (move.id + "%",))

        def settle(m: ShardMap) -> bool:
            mine = [b for b in move.buckets if m.states.get(b) is not None and m.states[b].move_id == move.id]
            for b in mine:
                del m.states[b]
            return bool(mine)

        self._update_map(f"move {move.id}: done", settle)
        with self._conn(move.source) as src:  # the settled map says it from now on
            src.execute("DELETE FROM reflex.copy_progress WHERE move_id LIKE %s", (move.id + "%",))
        return StepResult(move.id, self._save(move, "done", f"source rows deleted ({deleted})").phase)

    def _past_return(self, move: MoveRecord) -> str:
        """Why the move can no longer roll back ('' while it can): the map is settled to the target (the move's
        states are gone), or the cleanup of the source has started (its mark is on the source)."""
        if move.phase not in ("switched", "rolling_back") and move.switched_at is None:
            return ""
        m = self.map()
        if not all(m.owners[b] == move.target for b in move.buckets):
            return ""  # not switched, or already put back by a rollback
        if not any(m.states.get(b) is not None and m.states[b].move_id == move.id for b in move.buckets):
            return "the map is settled to the target and the source rows are deleted"
        try:
            with self._conn(move.source) as src:
                started = src.execute("SELECT 1 FROM reflex.copy_progress WHERE move_id = %s AND tbl = %s",
                                      (move.id, CLEANUP_MARK)).fetchone()
        except psycopg.errors.UndefinedTable:
            return ""
        return "the cleanup of the source rows has started" if started else ""

    def _from_rolling_back(self, move: MoveRecord) -> StepResult:
        why = self._past_return(move)
        if why:  # re-read under the step: a rollback from here would delete the target's rows, the only copy left
            move = self._save(move, "switched", f"rollback refused: {why}; the move goes on to done")
            return self._from_switched(move)
        self._rollback(move)
        return StepResult(move.id, move.phase)

    # ------------------------------------------------------------------ rollback
    def _rollback(self, move: MoveRecord) -> None:
        m = self.map()
        switched = any(m.owners[b] == move.target and m.states.get(b) is not None
                       and m.states[b].move_id == move.id for b in move.buckets)
        if switched and move.switched_at is None:
            # The switch step wrote the map and failed before its record said so (a crash, a throttled save, an
            # abort racing it): routers sent the buckets to the target meanwhile, so the way back is announced
            # like any switched move's (_announce_back). Recorded first: a retry finds the map back already.
            move.switched_at = self._now()
            self._save(move, move.phase, "the map named the target before the switch step failed; rolling back")
        if switched:
            with self._conn(move.target) as tgt:
                pg.set_fence(tgt, self.set.name, move.buckets, "fenced", move.id,
                             lock_timeout_ms=self.set.fence_lock_timeout_ms)
            with self._conn(move.source) as src:
                current = src.execute("SELECT 1 FROM reflex.copy_progress WHERE move_id = %s AND tbl = %s",
                                      (move.id, CURRENT_MARK)).fetchone() is not None
            if not current:  # a retry after a crash below skips what is done (the reverse stream may be gone)
                if move.mode == "online":
                    with self._conn(move.target) as tgt, self._conn(move.source) as src:
                        if not self._await_marker(tgt, src, move.id + "-r", MARKER_WAIT_S):
                            raise RuntimeError("reverse replication did not catch up; retry the rollback")
                else:
                    with self._conn(move.target) as tgt, self._conn(move.source) as src:
                        if not src.execute("SELECT 1 FROM reflex.copy_progress WHERE move_id = %s",
                                           (move.id + "-back",)).fetchone():
                            self._delete_rows(src, move.buckets)
                        self._copy(tgt, src, move.buckets, move.id + "-back")
                        report = self._verify(tgt, src, move.buckets)
                        if report["mismatched_buckets"]:
                            raise RuntimeError(f"copy back mismatch in {ranges(report['mismatched_buckets'])}")
                with self._conn(move.source) as src:
                    src.execute("INSERT INTO reflex.copy_progress (move_id, tbl, done) VALUES (%s, %s, true) "
                                "ON CONFLICT DO NOTHING", (move.id, CURRENT_MARK))
            if move.mode == "online":
                self._teardown(move, forward=False)
            self._crash("rollback:source-current")
        else:
            # Before the switch both streams go, the reverse one too (a crash or a fault after `_from_verified`
            # started it leaves it running): otherwise the delete of the target's copy below would travel back
            # through it and delete the same rows on the source. Their slots go with them.
            self._teardown(move, forward=True)
            self._teardown(move, forward=False)
        with self._conn(move.source) as src:
            source_schema = _has_schema(src)  # none: an abort before the first step, prepare never installed it
            if source_schema:
                pg.set_fence(src, self.set.name, move.buckets, "open", None)

        def back(mp: ShardMap) -> bool:
            mine = [b for b in move.buckets if mp.states.get(b) is not None and mp.states[b].move_id == move.id]
            for b in mine:
                mp.owners[b] = move.source
                del mp.states[b]
            return bool(mine)

        self._update_map(f"move {move.id}: rolled back", back)
        self._crash("rollback:map")
        move = self._announce_back(move)
        if source_schema:
            # Only once the map is back: until then the `#source-current` mark is what lets a retry (the map write
            # failed, the step timed out) skip bringing the source current through a reverse stream torn down.
            with self._conn(move.source) as src:
                src.execute("DELETE FROM reflex.copy_progress WHERE move_id LIKE %s", (move.id + "%",))
        with self._conn(move.target) as tgt:
            # Without the schema on the target, prepare never ran there: nothing of this move can be in it.
            if _has_schema(tgt):
                pg.set_fence(tgt, self.set.name, move.buckets, "moved", None)
                self._delete_rows(tgt, move.buckets)
                tgt.execute("DELETE FROM reflex.copy_progress WHERE move_id LIKE %s", (move.id + "%",))
        if move.fence_started_at is not None and move.fence_ms is None:
            move.fence_ms = round((time.time() - move.fence_started_at) * 1000, 1)
        self._save(move, "rolled_back", move.error or move.abort_requested or "rolled back")

    # ------------------------------------------------------------------ data
    def _delete_rows(self, conn: psycopg.Connection[Any], buckets: list[int]) -> int:
        """Delete the buckets' rows in batches (the mover passes the fence).

        The rows are removed the way they were copied (`_apply_as_replica`): with `session_replication_role =
        replica` when the role may set it, so that neither the application's triggers (an audit or a cascade
        into an unsharded table must not see a moved row as deleted) nor foreign-key checks fire. The tables go
        children first (a table referencing another of the set is emptied before it), so that without that
        right a plain FOREIGN KEY between the set's tables does not refuse the delete of its parent rows."""
        total = 0
        for name, key_column in self._delete_order(conn):
            table = quote_ident(name)
            partitioned = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = %s::regclass",
                                       (table,)).fetchone()
            # ctid alone is not unique in a partitioned table (each partition has its own): pair it with tableoid.
            row_id = "tableoid, ctid" if partitioned and partitioned[0] else "ctid"
            batch = (f"SELECT {row_id} FROM {table} WHERE {self._filter(key_column, buckets)} "
                     f"LIMIT {self.set.delete_batch_rows}")
            where = f"({row_id}) IN ({batch})" if row_id != "ctid" else f"ctid = ANY(ARRAY({batch}))"
            while True:
                with conn.transaction():
                    conn.execute("SET LOCAL reflex.mover = 'on'")
                    self._apply_as_replica(conn)
                    n = conn.execute(f"DELETE FROM {table} WHERE {where}").rowcount
                total += n
                if n < self.set.delete_batch_rows:
                    break
        return total

    def _delete_order(self, conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        """The set's tables (name, key column), every table before the tables it references (children first)."""
        tables = {t.name: t.key_column for t in self.set.tables}
        oids = {int(r[0]): name for name in tables
                for r in [conn.execute("SELECT %s::regclass::oid", (quote_ident(name),)).fetchone()] if r}
        parents: dict[str, set[str]] = {name: set() for name in tables}
        for child, parent in conn.execute("SELECT conrelid::oid, confrelid::oid FROM pg_constraint "
                                          "WHERE contype = 'f' AND conrelid = ANY(%s) AND confrelid = ANY(%s)",
                                          (list(oids), list(oids))).fetchall():
            if int(child) != int(parent):
                parents[oids[int(child)]].add(oids[int(parent)])
        order: list[str] = []
        # Repeatedly take the tables no remaining table references (a cycle, unlikely, keeps the configured order).
        remaining = list(tables)
        while remaining:
            free = [n for n in remaining if not any(n in parents[o] for o in remaining if o != n)]
            pick = free[0] if free else remaining[0]
            order.append(pick)
            remaining.remove(pick)
        return [(n, tables[n]) for n in order]

    def _copy(self, src: psycopg.Connection[Any], dst: psycopg.Connection[Any], buckets: list[int],
              progress_id: str) -> dict[str, int]:
        """Binary COPY of the buckets' rows, chunked by primary key; resumable from the last committed chunk."""
        copied: dict[str, int] = {}
        for t in self.set.tables:
            cols, pk = pg.table_columns(src, t.name)
            table = quote_ident(t.name)
            col_list = ", ".join(quote_ident(c) for c in cols)
            pk_list = ", ".join(quote_ident(c) for c, _ in pk)
            # Qualified: in ORDER BY a bare name means the output column first, and the output column `"id"::text`
            # is still named "id" - the walk then sorted every row after the cursor by its key's text (on disk for
            # large tables, and in the wrong order for a non-text key) instead of reading the primary key in order.
            pk_text = ", ".join(f"r.{quote_ident(c)}::text" for c, _ in pk)
            pk_order = ", ".join(f"r.{quote_ident(c)}" for c, _ in pk)
            where = self._filter(t.key_column, buckets)
            row = dst.execute("SELECT cursor, rows, done FROM reflex.copy_progress WHERE move_id = %s AND tbl = %s",
                              (progress_id, t.name)).fetchone()
            cursor: list[Any] | None = row[0] if row else None
            rows = int(row[1]) if row else 0
            done = bool(row[2]) if row else False
            span = self.set.copy_chunk_rows
            key_params = ", ".join(f"%s::{typ}" for _, typ in pk)
            # The table's last key now: the buckets are fenced (the source's in a forward copy, the target's in a
            # copy back), so every row of theirs is at or before it, and the walk stops there: rows that other
            # buckets' writers keep appending after it (a growing key) cannot keep the copy going.
            last = None if done else src.execute(f"SELECT {pk_text} FROM {table} AS r ORDER BY "
                                                 f"{', '.join(f'r.{quote_ident(c)} DESC' for c, _ in pk)} LIMIT 1"
                                                 ).fetchone()
            until, until_params = (f" AND ({pk_list}) <= ({key_params})", list(last)) if last else ("", [])
            while not done:
                started = time.monotonic()
                after, params = "", []
                if cursor is not None:
                    after = f" AND ({pk_list}) > ({key_params})"
                    params = list(cursor)
                # The chunk's end: `copy_chunk_rows` rows of the table (any bucket) after the cursor, an index-only
                # walk of the primary key. Bounding by the bucket's own rows would evaluate the bucket function
                # once more per row, and the planner, underestimating the filter, read and sorted every row after
                # the cursor for each chunk (quadratic in the table's size). A chunk holds at most that many rows.
                # The bound is kept in the text form PostgreSQL prints for each key column (and cast back with
                # `::<type>`): it round-trips every type (bytea, numeric, timestamps, uuid...) where a Python value
                # turned into JSON would not (str(b'..') is no bytea input). The output settings it depends on are
                # pinned in the mover's sessions (SESSION_SETTINGS).
                end = src.execute(f"SELECT {pk_text} FROM {table} AS r WHERE true{after}{until} "
                                  f"ORDER BY {pk_order} OFFSET {span - 1} LIMIT 1", [*params, *until_params]
                                  ).fetchone()
                upto, upto_params = (f" AND ({pk_list}) <= ({key_params})", list(end)) if end else (until, until_params)
                bound = [*params, *upto_params]
                select = f"SELECT {col_list} FROM {table} WHERE {where}{_literals(src, after + upto, bound)}"
                with dst.transaction():
                    dst.execute("SET LOCAL reflex.mover = 'on'")
                    self._apply_as_replica(dst)
                    n = pg.forward_copy(src, dst, f"COPY ({select}) TO STDOUT (FORMAT BINARY)",
                                        f"COPY {table} ({col_list}) FROM STDIN (FORMAT BINARY)")
                    rows += n
                    cursor = list(end) if end is not None else cursor
                    done = end is None
                    dst.execute("INSERT INTO reflex.copy_progress (move_id, tbl, cursor, rows, done) "
                                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (move_id, tbl) DO UPDATE SET "
                                "cursor = EXCLUDED.cursor, rows = EXCLUDED.rows, done = EXCLUDED.done",
                                (progress_id, t.name, Jsonb(cursor), rows, done))
                self._crash("copy:chunk")
                if not done and self._deadline is not None and time.monotonic() > self._deadline:
                    raise _OutOfBudget()
                span = self._next_span(span, time.monotonic() - started)
            copied[t.name] = rows
        return copied

    @staticmethod
    def _apply_as_replica(dst: psycopg.Connection[Any]) -> bool:
        """Inside the chunk's transaction: apply the rows as logical replication applies them (the `online` mode's
        subscription does), with `session_replication_role = replica`, so that no ordinary trigger fires for the
        copy: neither the fence's (skipped by its WHEN clause anyway, but evaluated per row: about 17 % of a COPY,
        measured) nor the application's (an audit or `updated_at` trigger must not see a moved row as a new one),
        nor foreign-key checks (the tables of a bucket move together from a consistent source). Only a role
        allowed to set it (a superuser; on RDS and Aurora, rds_superuser) can: otherwise the copy goes on as
        before, the fence's trigger skipped by its WHEN clause. Returns whether it applies."""
        try:
            with dst.transaction():  # a savepoint: a refusal leaves the chunk's transaction usable
                dst.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            return False
        return True

    def _next_span(self, span: int, took_s: float) -> int:
        """The next chunk's rows of the table: what the last chunk's pace covers in `copy_chunk_target_s`, between
        `copy_chunk_rows` and 100 x that, and within half the step's remaining budget. Each chunk is a transaction
        and a COPY pair that must ramp up (measured: 24 chunks of 50,000 rows copied 1 M rows at 0.7 x the speed
        of one COPY; docs/benchmarks.md); a chunk is also what a crash repeats, so it stays a few seconds long."""
        target = self.set.copy_chunk_target_s
        if target <= 0 or took_s <= 0:
            return span
        room = target
        if self._deadline is not None:
            room = min(room, max(0.0, self._deadline - time.monotonic()) / 2)
        base = self.set.copy_chunk_rows
        return int(min(max(span / took_s * room, base), base * 100, 10_000_000))

    def _verify(self, src: psycopg.Connection[Any], dst: psycopg.Connection[Any], buckets: list[int]
                ) -> dict[str, Any]:
        """Per bucket and table: row count and checksum (sum of the first 60 bits of md5 of each row's text)."""
        mismatched: set[int] = set()
        total = 0
        per_table: dict[str, int] = {}
        for t in self.set.tables:
            cols, _ = pg.table_columns(src, t.name)
            row_text = "ROW(" + ", ".join(quote_ident(c) for c in cols) + ")::text"
            b = bucket_sql(quote_ident(t.key_column), self.set.buckets, self.set.key.type)
            checksum = f"coalesce(sum(('x' || substr(md5({row_text}), 1, 15))::bit(60)::bigint), 0)"
            q = (f"SELECT {b} AS b, count(*), {checksum}"
                 f" FROM {quote_ident(t.name)} WHERE {self._filter(t.key_column, buckets)} GROUP BY 1")
            left = {int(r[0]): (int(r[1]), str(r[2])) for r in src.execute(q).fetchall()}
            right = {int(r[0]): (int(r[1]), str(r[2])) for r in dst.execute(q).fetchall()}
            for bucket in set(left) | set(right):
                if left.get(bucket) != right.get(bucket):
                    mismatched.add(bucket)
            per_table[t.name] = sum(c for c, _ in left.values())
            total += per_table[t.name]
        return {"rows": total, "rows_per_table": per_table, "mismatched_buckets": sorted(mismatched)}

    # ------------------------------------------------------------------ logical replication (online)
    def _names(self, move: MoveRecord, *, forward: bool) -> dict[str, str]:
        base = f"rx_{_short(self.set.name, move.id)}{'' if forward else '_r'}"
        return {"pub": base, "slot": base, "sub": base, "marker": move.id if forward else move.id + "-r"}

    def _replicate(self, move: MoveRecord, source: str, target: str, *, forward: bool) -> None:
        """Publication (row-filtered to the buckets) + slot on `source`, subscription on `target`. Idempotent.

        The subscription is created without connecting (connect = false) and the slot by hand: that also
        works when both databases are in one cluster, where CREATE SUBSCRIPTION would wait on itself."""
        names = self._names(move, forward=forward)
        src_shard = self.set.shard(source)
        assert src_shard is not None
        with self._conn(source) as src:
            if not src.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (names["pub"],)).fetchone():
                tables = [f"{quote_ident(t.name)} WHERE {self._filter(t.key_column, move.buckets, row_filter=True)}"
                          for t in self.set.tables]
                tables.append(f"reflex.marker WHERE (move_id = {_lit(names['marker'])})")
                # No `truncate`: row filters do not apply to it, a TRUNCATE on this shard would empty the whole
                # table on the other, the buckets it owns included. Partitioned tables publish through their root
                # (PostgreSQL refuses a row filter on a partitioned table otherwise; no effect on plain ones).
                src.execute(f"CREATE PUBLICATION {names['pub']} FOR TABLE {', '.join(tables)} "
                            "WITH (publish = 'insert, update, delete', publish_via_partition_root = true)")
            if not src.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (names["slot"],)).fetchone():
                src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (names["slot"],))
        self._crash("replicate:source")
        conninfo = self._conninfo(src_shard)
        with self._conn(target) as tgt:
            row = tgt.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s", (names["sub"],)).fetchone()
            if row is None:
                tgt.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = false, "
                                    "slot_name = {})").format(sql.Identifier(names["sub"]), sql.Literal(conninfo),
                                                             sql.Identifier(names["pub"]),
                                                             sql.Literal(names["slot"])))
            if row is None or not row[0]:
                tgt.execute(f"ALTER SUBSCRIPTION {names['sub']} ENABLE")
            tgt.execute(f"ALTER SUBSCRIPTION {names['sub']} REFRESH PUBLICATION "
                        f"WITH (copy_data = {'true' if forward else 'false'})")

    def _teardown(self, move: MoveRecord, *, forward: bool) -> None:
        """Drop the subscription (without touching the slot remotely), then the slot and the publication."""
        names = self._names(move, forward=forward)
        source, target = (move.source, move.target) if forward else (move.target, move.source)
        sub_oid: int | None = None
        with self._conn(target) as tgt:
            row = tgt.execute("SELECT oid FROM pg_subscription WHERE subname = %s", (names["sub"],)).fetchone()
            if row is not None:
                sub_oid = int(row[0])
                tgt.execute(f"ALTER SUBSCRIPTION {names['sub']} DISABLE")
                tgt.execute(f"ALTER SUBSCRIPTION {names['sub']} SET (slot_name = NONE)")
                tgt.execute(f"DROP SUBSCRIPTION {names['sub']}")
        with self._conn(source) as src:
            patterns = [names["slot"]] + ([f"pg_{sub_oid}_sync_%"] if sub_oid else [])
            deadline = time.monotonic() + 30
            while True:
                slots = src.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE slot_name = %s "
                                    "OR slot_name LIKE ANY(%s)", (names["slot"], patterns[1:] or ["-"])).fetchall()
                for _slot, pid in slots:
                    if pid is not None:
                        src.execute("SELECT pg_terminate_backend(%s)", (pid,))
                active = []
                for slot, _ in slots:
                    try:
                        src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    except psycopg.errors.ObjectInUse:
                        active.append(slot)
                    except psycopg.errors.UndefinedObject:
                        pass
                if not active or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            src.execute(f"DROP PUBLICATION IF EXISTS {names['pub']}")

    def _stop_stream(self, move: MoveRecord, *, forward: bool) -> None:
        """Disable the subscription and wait until its sender has let go of the slot. Idempotent."""
        names = self._names(move, forward=forward)
        source, target = (move.source, move.target) if forward else (move.target, move.source)
        with self._conn(target) as tgt:
            row = tgt.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s", (names["sub"],)).fetchone()
            if row is not None and row[0]:
                tgt.execute(f"ALTER SUBSCRIPTION {names['sub']} DISABLE")
        with self._conn(source) as src:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = src.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                  (names["slot"],)).fetchone()
                if row is None or row[0] is None:
                    return
                if time.monotonic() > deadline - 9:
                    src.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                time.sleep(0.005)
            raise RuntimeError(f"the sender of slot {names['slot']} did not stop; retry")

    def _await_marker(self, src: psycopg.Connection[Any], tgt: psycopg.Connection[Any], marker: str,
                      timeout_s: float) -> bool:
        """Insert a marker on `src` and wait until replication has applied it on `tgt` (commit order)."""
        token = uuid.uuid4().hex
        src.execute("INSERT INTO reflex.marker (move_id, token) VALUES (%s, %s)", (marker, token))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if tgt.execute("SELECT 1 FROM reflex.marker WHERE move_id = %s AND token = %s",
                           (marker, token)).fetchone():
                return True
            time.sleep(0.005)
        return False


def _literals(conn: psycopg.Connection[Any], text: str, params: list[Any]) -> str:
    """COPY takes no parameters: bind them client-side as quoted literals (text has only %s placeholders)."""
    parts = text.split("%s")
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        out += [sql.Literal(value).as_string(conn), rest]
    return "".join(out)


def _has_schema(conn: psycopg.Connection[Any]) -> bool:
    """Whether the reflex schema (its fence table) is installed on this shard."""
    row = conn.execute("SELECT to_regclass('reflex.fence') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
