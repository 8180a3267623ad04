"""Invalidate Redis entries by exact key, by glob pattern and by tag, gently and resumably.

`RedisInvalidator` takes an injected client, a standalone `redis.Redis` or a `redis.cluster.RedisCluster`,
and never sends `KEYS`, `FLUSHDB` or `FLUSHALL` except through `flush`, which refuses unless the policy
allows it and the request confirms with the cache's name.

* Patterns are found with `SCAN` (a tuned `COUNT`, default 100: about 0.1 ms of server time per page)
  on every primary and removed with `UNLINK` (memory freed off the main thread). Strategy "server"
  (default) runs each page, SCAN and UNLINK together, as one small Lua script inside Redis: the keys
  never cross the network and a page is atomic. Strategy "client" (for servers where scripting is
  disabled) brings each page back and unlinks it in pipelines of `batch_size` keys. In cluster mode each
  primary is scanned through its own connection and no UNLINK spans two hash slots (per-slot groups in
  client mode, one key per UNLINK inside the script).
* Tags (see `cache_tags`) cost time in proportion to the keys carrying them: the tag set is first
  renamed to a private name in the same slot (so an entry tagged while we work lands in a fresh set
  and is not lost), then read with `SSCAN` in chunks, its members unlinked, and the set removed.
* Long runs stop when their time budget is spent and return a `ScanCheckpoint` (per-node cursors and
  the counts so far). Passing it back resumes where the run stopped. A Redis failure raises
  `InvalidationInterrupted` carrying the last checkpoint, so a retry loses nothing and counts nothing
  twice: a cursor only advances once every key of its page has been unlinked.
* Live traffic comes first: small pipelines (`batch_size` keys per round trip, at most
  `KEYS_PER_UNLINK` keys per command, so no single command holds the server), an optional pause
  between batches, no blocking commands.

`redis` is imported lazily: handlers import this module at cold start, the client brings redis along.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from invalidator.cache_tags import DEFAULT_NAMESPACE, CacheTagError, tag_set_key, validate_name

if TYPE_CHECKING:
    import redis

DEFAULT_SCAN_COUNT = 100  # ~0.1 ms of server time per page: see docs/benchmarks.md (pattern invalidation)
DEFAULT_BATCH_SIZE = 500
DEFAULT_SSCAN_COUNT = 500
KEYS_PER_UNLINK = 100
MAX_PATTERN_LENGTH = 1024
MAX_KEYS_PER_REQUEST = 100_000
STANDALONE_NODE = "standalone"
_HANDOVER = "rename"  # tag checkpoint cursor key: the tag set has not been handed over yet
CHECKPOINT_VERSION = 1

Kind = Literal["keys", "pattern", "tag", "flush"]
Strategy = Literal["server", "client"]

# One SCAN page and the UNLINK of what it matched, run inside Redis: the keys never cross the network
# and the page is atomic (done entirely or not at all). ARGV: cursor, pattern, COUNT, keys per UNLINK.
# Each page also returns the identity (`INFO server` run_id) of the server that ran it: a SCAN cursor is only
# meaningful on the server that issued it (see `delete_pattern`).
_RUN_ID_LUA = """
local function _server_id()
  local info = redis.pcall('INFO', 'server')
  if type(info) ~= 'string' then return '' end
  return string.match(info, 'run_id:(%x+)') or ''
end
"""
# Standalone: multi-key UNLINKs of up to KEYS_PER_UNLINK keys (cheaper per key than one call each).
_PAGE_SCRIPT_STANDALONE = _RUN_ID_LUA + """
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = page[2]
local n = #keys
local removed = 0
local chunk = tonumber(ARGV[4])
for i = 1, n, chunk do
  removed = removed + redis.call('UNLINK', unpack(keys, i, math.min(i + chunk - 1, n)))
end
return {page[1], n, removed, _server_id()}
"""
# Cluster: one UNLINK per key, so no command spans two slots (a script cannot compute a key's slot
# cheaply); every key is local to the node that returned it. Redis 7 also checks that a script touches
# one slot unless it declares `allow-cross-slot-keys`; Redis 6 has neither the check nor the flags syntax.
_PAGE_SCRIPT_CLUSTER_BODY = _RUN_ID_LUA + """
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = page[2]
local removed = 0
for i = 1, #keys do
  removed = removed + redis.call('UNLINK', keys[i])
end
return {page[1], #keys, removed, _server_id()}
"""
_PAGE_SCRIPT_CLUSTER_V7 = "#!lua flags=allow-cross-slot-keys\n" + _PAGE_SCRIPT_CLUSTER_BODY
_PAGE_SCRIPT_CLUSTER_V6 = _PAGE_SCRIPT_CLUSTER_BODY
Key = str | bytes


# --------------------------------------------------------------------------- errors


class InvalidationInputError(ValueError):
    """A request that cannot be run as given; `field` names the offending input. Nothing was sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FlushRefused(PermissionError):
    """A flush the policy does not allow, or whose confirmation does not name the cache. Nothing was sent."""

    def __init__(self, reason: Literal["not-allowed", "confirmation-mismatch"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidationInterrupted(RuntimeError):
    """Redis failed mid-run. `report` holds the counts done so far and the checkpoint to resume from."""

    def __init__(self, report: InvalidationReport, cause: BaseException) -> None:
        super().__init__(f"{report.kind} invalidation of {report.target!r} interrupted after "
                         f"{report.removed} removed: {type(cause).__name__}: {cause}")
        self.report = report


# --------------------------------------------------------------------------- validation


def validate_pattern(pattern: object, *, field: str = "pattern", allow_match_all: bool = False,
                     allow_unanchored: bool = False) -> str:
    """Check a Redis glob: non-empty, balanced `[...]`, no dangling escape, no match-everything.

    A pattern made only of `*` and `?` matches (nearly) every key: that is a flush, refused here unless
    `allow_match_all` (see `check_flush_allowed`). A pattern must also be anchored: it starts with a non-empty
    literal prefix, and when it has a `:` its first segment (before the first `:`) is entirely literal.
    `[^~]*`, `[é-~]*` (Redis compares bytes: é is 0xC3 0xA9), `?*`, `a*:x` are refused unless
    `allow_unanchored` (the cache's policy allows flushing it).
    """
    if not isinstance(pattern, str):
        raise InvalidationInputError(field, f"must be a string, got {type(pattern).__name__}")
    if not pattern:
        raise InvalidationInputError(field, "must not be empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidationInputError(field, f"is longer than {MAX_PATTERN_LENGTH} characters")
    if any(not ch.isprintable() for ch in pattern if ch != " "):
        raise InvalidationInputError(field, "must not contain control characters or lone surrogates")
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise InvalidationInputError(field, "ends with an unescaped backslash")
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            first = j
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                raise InvalidationInputError(field, f"unbalanced '[' at position {i}")
            if j == first:
                raise InvalidationInputError(field, f"empty character class at position {i}")
            i = j + 1
            continue
        i += 1
    if "*" in pattern and set(pattern) <= {"*", "?"} and not allow_match_all:
        raise InvalidationInputError(
            field, f"{pattern!r} matches every key; flushing a cache needs the flush operation and its confirmation")
    if not (allow_match_all or allow_unanchored):
        literal, first_meta = literal_prefix(pattern)
        if not literal:
            raise InvalidationInputError(
                field, f"{pattern[:80]!r} does not start with a literal prefix (it may match nearly every key: Redis "
                "compares bytes, so [^~] or [\u00e9-~] spans almost the whole keyspace); start the pattern "
                "with its key prefix, e.g. 'page:*', or flush the cache with its confirmation")
        colon = _first_unescaped(pattern, ":")
        if first_meta is not None and colon is not None and colon > first_meta:
            raise InvalidationInputError(
                field, f"{pattern[:80]!r}: its first segment (before the first ':') must be literal, no '*', '?' or "
                "'[' before it")
    return pattern


def _first_unescaped(pattern: str, char: str) -> int | None:
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == char:
            return i
        i += 1
    return None


def literal_prefix(pattern: str) -> tuple[str, int | None]:
    """The literal text a glob starts with (escapes resolved) and the index of its first `*`, `?` or `[`."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if ch in "*?[":
            return "".join(out), i
        out.append(ch)
        i += 1
    return "".join(out), None


def check_flush_allowed(*, confirm_name: str | None, cache_name: str, allowed: bool) -> None:
    """Refuse a flush unless the policy allows it and the request repeats the cache's name exactly."""
    if not allowed:
        raise FlushRefused("not-allowed", f"the policy of cache {cache_name!r} does not allow flushing it")
    if not confirm_name or confirm_name != cache_name:
        raise FlushRefused("confirmation-mismatch",
                           f"a flush must be confirmed with the cache's name {cache_name!r}")


def _positive_int(value: int, field: str, upper: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
        raise InvalidationInputError(field, f"must be a whole number in [1, {upper}]")
    return value


def _validate_keys(keys: object, field: str = "keys") -> list[Key]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise InvalidationInputError(field, "must be a list of keys")
    out: list[Key] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str | bytes) or not key:
            raise InvalidationInputError(f"{field}[{i}]", "must be a non-empty string")
        out.append(key)
    if not out:
        raise InvalidationInputError(field, "must not be empty")
    if len(out) > MAX_KEYS_PER_REQUEST:
        raise InvalidationInputError(field, f"at most {MAX_KEYS_PER_REQUEST} keys per request")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- checkpoint and report


@dataclass(frozen=True)
class ScanCheckpoint:
    """Where a pattern or tag invalidation stopped, and what it had done: JSON-able via `to_dict`.

    `cursors` holds the next SCAN (or SSCAN) cursor of every node not finished yet; `done` the nodes
    finished. Counts and `elapsed_s` are cumulative over every run so far.
    """

    kind: Literal["pattern", "tag"]
    target: str
    cursors: Mapping[str, int]
    done: tuple[str, ...] = ()
    matched: int = 0
    removed: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    runs: int = 0
    snapshot: str | None = None  # tag runs: the private name the tag set was renamed to
    # Pattern runs: the server (`INFO server` run_id) each node's cursor (or finished scan) belongs to, and how
    # many times a node's scan started again from 0 because its server changed (restart, failover).
    servers: Mapping[str, str] = field(default_factory=dict)
    restarts: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": CHECKPOINT_VERSION, "kind": self.kind, "target": self.target,
            # Strings: a 64-bit cursor must survive JSON readers that use doubles (Step Functions, JS).
            "cursors": {name: str(c) for name, c in self.cursors.items()},
            "done": list(self.done), "matched": self.matched, "removed": self.removed,
            "batches": self.batches, "elapsed_s": round(self.elapsed_s, 6), "runs": self.runs,
        }
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot
        if self.servers:
            data["servers"] = dict(self.servers)
        if self.restarts:
            data["restarts"] = self.restarts
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanCheckpoint:
        try:
            if data.get("v") != CHECKPOINT_VERSION:
                raise ValueError(f"unsupported version {data.get('v')!r}")
            kind = data["kind"]
            if kind not in ("pattern", "tag"):
                raise ValueError(f"unknown kind {kind!r}")
            cursors = {str(k): int(v) for k, v in dict(data["cursors"]).items()}
            if any(c < 0 for c in cursors.values()):
                raise ValueError("negative cursor")
            snapshot = data.get("snapshot")
            if kind == "tag" and not isinstance(snapshot, str):
                raise ValueError("a tag checkpoint needs its snapshot")
            return cls(kind=kind, target=str(data["target"]), cursors=cursors,
                       done=tuple(str(d) for d in data.get("done", ())),
                       matched=int(data.get("matched", 0)), removed=int(data.get("removed", 0)),
                       batches=int(data.get("batches", 0)), elapsed_s=float(data.get("elapsed_s", 0.0)),
                       runs=int(data.get("runs", 0)), snapshot=snapshot,
                       servers={str(k): str(v) for k, v in dict(data.get("servers") or {}).items()},
                       restarts=int(data.get("restarts", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidationInputError("checkpoint", f"is not a valid checkpoint: {err}") from None


@dataclass(frozen=True)
class InvalidationReport:
    """What one invalidation did: the audit records it per pattern, per tag, per key list, per flush.

    `matched`: keys found (SCAN matches, tag members, distinct keys requested, keys in the flushed db);
    `removed`: keys that existed and were unlinked. A tag's `matched - removed` are stale members.
    Counts and `duration_s` are cumulative across resumed runs; `complete` is False when the time
    budget ran out, and `checkpoint` then says where to resume.
    """

    kind: Kind
    target: str
    matched: int
    removed: int
    batches: int
    duration_s: float
    complete: bool
    nodes: int = 1
    runs: int = 1
    checkpoint: ScanCheckpoint | None = None
    restarts: int = 0  # node scans started again from 0 because their server changed (restart, failover)

    def as_audit(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind, "target": self.target, "matched": self.matched, "removed": self.removed,
            "batches": self.batches, "duration_s": round(self.duration_s, 3), "complete": self.complete,
            "nodes": self.nodes, "runs": self.runs, "restarts": self.restarts,
        }
        if self.checkpoint is not None:
            data["checkpoint"] = self.checkpoint.to_dict()
        return data


@dataclass
class _Progress:
    matched: int = 0
    removed: int = 0
    batches: int = 0


@dataclass(frozen=True)
class _Node:
    name: str
    client: Any  # redis.Redis: the standalone client, or a cluster primary's own connection


@dataclass
class _Pending:
    """Commands queued on one pipeline, with the keys of each, so a redirected slot can be re-sent."""

    client: Any
    pipe: Any = None
    commands: list[list[Key]] = field(default_factory=list)
    keys: int = 0


# --------------------------------------------------------------------------- the invalidator


class RedisInvalidator:
    """Exact-key, pattern, tag and (confirmed) flush invalidation over an injected redis client.

    `batch_size` keys are unlinked per round trip (at most `KEYS_PER_UNLINK` per command); `pause_s`
    sleeps after every batch to leave room for live traffic. `clock` and `sleep` are injectable.
    """

    def __init__(self, client: redis.Redis | Any, *, tag_namespace: str = DEFAULT_NAMESPACE,
                 scan_count: int = DEFAULT_SCAN_COUNT, batch_size: int = DEFAULT_BATCH_SIZE,
                 pause_s: float = 0.0, strategy: Strategy = "server", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from redis.cluster import RedisCluster

        self._client: Any = client
        self._cluster = isinstance(client, RedisCluster)
        try:
            self.tag_namespace = validate_name(tag_namespace, "tag_namespace")
        except CacheTagError as err:
            raise InvalidationInputError(err.field, str(err).split(": ", 1)[-1]) from None
        self.scan_count = _positive_int(scan_count, "scan_count", 100_000)
        self.batch_size = _positive_int(batch_size, "batch_size", 10_000)
        if pause_s < 0:
            raise InvalidationInputError("pause_s", "must not be negative")
        self.pause_s = pause_s
        if strategy not in ("server", "client"):
            raise InvalidationInputError("strategy", "must be 'server' or 'client'")
        self.strategy: Strategy = strategy
        self._scripts: dict[str, str] = {}
        self._clock = clock
        self._sleep = sleep

    @property
    def cluster_mode(self) -> bool:
        return self._cluster

    # ------------------------------------------------------------------ exact keys
    def delete_keys(self, keys: Sequence[Key], *, batch_size: int | None = None,
                    pause_s: float | None = None) -> InvalidationReport:
        """Unlink the given keys (routed by slot in cluster mode). `matched` = distinct keys requested."""
        unique = _validate_keys(keys)
        batch = _positive_int(self.batch_size if batch_size is None else batch_size, "batch_size", 10_000)
        pause = self.pause_s if pause_s is None else pause_s
        start = self._clock()
        progress = _Progress()
        try:
            self._unlink_routed(unique, progress, batch, pause)
        except _redis_errors() as err:
            report = InvalidationReport(kind="keys", target=f"{len(unique)} keys", matched=progress.matched,
                                        removed=progress.removed, batches=progress.batches,
                                        duration_s=self._clock() - start, complete=False,
                                        nodes=len(self._primaries()))
            raise InvalidationInterrupted(report, err) from err
        return InvalidationReport(kind="keys", target=f"{len(unique)} keys", matched=len(unique),
                                  removed=progress.removed, batches=progress.batches,
                                  duration_s=self._clock() - start, complete=True, nodes=len(self._primaries()))

    # ------------------------------------------------------------------ glob patterns
    def delete_pattern(self, pattern: str, *, scan_count: int | None = None, batch_size: int | None = None,
                       cursor_checkpoint: ScanCheckpoint | Mapping[str, Any] | None = None,
                       time_budget_s: float | None = None, pause_s: float | None = None,
                       strategy: Strategy | None = None, allow_match_all: bool = False,
                       allow_unanchored: bool = False) -> InvalidationReport:
        """SCAN every primary for `pattern` and UNLINK what matches, until done or out of time.

        `strategy` "server" (default) runs each page's SCAN + UNLINK as one small script inside Redis;
        "client" brings the keys back and unlinks them in pipelines of `batch_size` (for servers where
        scripting is disabled). Resume with the returned report's `checkpoint`, or the one an
        `InvalidationInterrupted` carries. `allow_match_all` lets `*` through: only after
        `check_flush_allowed` passed.
        """
        validate_pattern(pattern, allow_match_all=allow_match_all, allow_unanchored=allow_unanchored)
        count = _positive_int(self.scan_count if scan_count is None else scan_count, "scan_count", 100_000)
        batch = _positive_int(self.batch_size if batch_size is None else batch_size, "batch_size", 10_000)
        pause = self.pause_s if pause_s is None else pause_s
        how = strategy or self.strategy
        if how not in ("server", "client"):
            raise InvalidationInputError("strategy", "must be 'server' or 'client'")
        _check_budget(time_budget_s)
        checkpoint = _coerce_checkpoint(cursor_checkpoint, "pattern", pattern)
        nodes = {node.name: node for node in self._primaries()}
        cursors, done = _resume_cursors(checkpoint, nodes)
        base = checkpoint or ScanCheckpoint(kind="pattern", target=pattern, cursors={})
        servers = {name: sid for name, sid in base.servers.items() if name in nodes}
        progress = _Progress(base.matched, base.removed, base.batches)
        restarts = base.restarts
        start = self._clock()

        def snapshot() -> ScanCheckpoint:
            return replace(base, cursors=dict(cursors), done=tuple(sorted(done)), matched=progress.matched,
                           removed=progress.removed, batches=progress.batches,
                           elapsed_s=base.elapsed_s + (self._clock() - start), runs=base.runs + 1,
                           servers=dict(servers), restarts=restarts)

        try:
            while True:
                while cursors:
                    for name in sorted(cursors):  # one page per node per round: spreads the load
                        node = nodes[name]
                        cursor = cursors[name]
                        if how == "server":
                            next_cursor, server = self._scan_unlink_page(node, cursor, pattern, count, progress,
                                                                         pause)
                        else:
                            next_cursor, keys, server = self._scan_page(node, cursor, pattern, count)
                            if keys:
                                self._unlink_on_node(node, list(dict.fromkeys(keys)), progress, batch, pause)
                        if cursor != 0 and servers.get(name) != server:
                            # A cursor is only meaningful on the server that issued it: this page ran on another
                            # one (restart, failover onto the same address). Scan this node again from 0.
                            cursors[name] = 0
                            servers.pop(name, None)
                            restarts += 1
                        else:
                            servers[name] = server
                            # The cursor advances only now that every key of its page is gone.
                            if int(next_cursor) == 0:
                                del cursors[name]
                                done.add(name)
                            else:
                                cursors[name] = int(next_cursor)
                        if cursors and time_budget_s is not None and self._clock() - start >= time_budget_s:
                            return self._report("pattern", pattern, snapshot(), len(nodes), complete=False)
                # Complete only if every finished node is still the server that finished it.
                changed = [name for name in sorted(done) if self._server_id(nodes[name]) != servers.get(name)]
                if not changed:
                    break
                for name in changed:
                    done.discard(name)
                    servers.pop(name, None)
                    cursors[name] = 0
                    restarts += 1
        except _redis_errors() as err:
            raise InvalidationInterrupted(
                self._report("pattern", pattern, snapshot(), len(nodes), complete=False), err) from err
        return self._report("pattern", pattern, snapshot(), len(nodes), complete=True)

    @staticmethod
    def _server_id(node: _Node) -> str:
        from redis.exceptions import ResponseError

        try:
            return str(node.client.info("server").get("run_id", ""))
        except ResponseError:  # INFO denied by an ACL: the identity cannot be checked
            return ""

    @staticmethod
    def _scan_page(node: _Node, cursor: int, pattern: str, count: int) -> tuple[int, list[Key], str]:
        """One SCAN page and the identity of the server that ran it (MULTI: the same server for both)."""
        from redis.exceptions import ResponseError

        pipe = node.client.pipeline(transaction=True)
        pipe.info("server")
        pipe.scan(cursor=cursor, match=pattern, count=count)
        try:
            info, (next_cursor, keys) = pipe.execute()
        except ResponseError:  # INFO denied by an ACL
            next_cursor, keys = node.client.scan(cursor=cursor, match=pattern, count=count)
            return int(next_cursor), list(keys), ""
        return int(next_cursor), list(keys), str(info.get("run_id", ""))

    def _scan_unlink_page(self, node: _Node, cursor: int, pattern: str, count: int, progress: _Progress,
                          pause: float) -> tuple[int, str]:
        from redis.exceptions import NoScriptError

        script = self._page_script(node)
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        try:
            reply = node.client.evalsha(sha, 0, cursor, pattern, count, KEYS_PER_UNLINK)
        except NoScriptError:
            node.client.script_load(script)
            reply = node.client.evalsha(sha, 0, cursor, pattern, count, KEYS_PER_UNLINK)
        next_cursor, matched, removed = int(reply[0]), int(reply[1]), int(reply[2])
        server = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
        progress.matched += matched
        progress.removed += removed
        progress.batches += 1
        if pause > 0:
            self._sleep(pause)
        return next_cursor, server

    def _page_script(self, node: _Node) -> str:
        script = self._scripts.get(node.name)
        if script is None:
            if not self._cluster:
                script = _PAGE_SCRIPT_STANDALONE
            else:
                from redis.exceptions import ResponseError

                try:
                    version = str(node.client.info("server").get("redis_version", "7"))
                except ResponseError:  # INFO denied by an ACL: assume a current server
                    version = "7"
                major = version.split(".", 1)[0]
                script = _PAGE_SCRIPT_CLUSTER_V6 if major.isdigit() and int(major) < 7 else _PAGE_SCRIPT_CLUSTER_V7
            self._scripts[node.name] = script
        return script

    # ------------------------------------------------------------------ tags
    def delete_tag(self, tag: str, *, cursor_checkpoint: ScanCheckpoint | Mapping[str, Any] | None = None,
                   time_budget_s: float | None = None, batch_size: int | None = None,
                   sscan_count: int = DEFAULT_SSCAN_COUNT, pause_s: float | None = None) -> InvalidationReport:
        """Unlink every key recorded under `tag`, then the tag set itself. Cost ~ the tag's members."""
        try:
            set_key = tag_set_key(self.tag_namespace, tag)
        except CacheTagError as err:
            raise InvalidationInputError(err.field, str(err).split(": ", 1)[-1]) from None
        batch = _positive_int(self.batch_size if batch_size is None else batch_size, "batch_size", 10_000)
        count = _positive_int(sscan_count, "sscan_count", 100_000)
        pause = self.pause_s if pause_s is None else pause_s
        _check_budget(time_budget_s)
        resumed = _coerce_checkpoint(cursor_checkpoint, "tag", tag)
        if resumed is not None and not (resumed.snapshot or "").startswith(f"{set_key}:purging:"):
            # The snapshot is unlinked at the end: never let a checkpoint name some other key.
            raise InvalidationInputError("checkpoint", "its snapshot is not a purge of this tag's set")
        start = self._clock()
        nodes = len(self._primaries())
        registry = purge_registry_key(set_key)
        base = resumed or ScanCheckpoint(kind="tag", target=tag, cursors={_HANDOVER: 0},
                                         snapshot=f"{set_key}:purging:{uuid.uuid4().hex}")
        assert base.snapshot is not None

        def failed_early(err: BaseException) -> InvalidationInterrupted:
            failed = replace(base, runs=base.runs + 1, elapsed_s=base.elapsed_s + self._clock() - start)
            return InvalidationInterrupted(self._report("tag", tag, failed, nodes, complete=False), err)

        if _HANDOVER in base.cursors:
            try:
                handed_over = self._hand_over(set_key, base.snapshot, registry)
                # Purges of earlier runs that never finished (retries exhausted, Redis restarted): this run
                # finishes them too, after its own snapshot.
                orphan = None if handed_over else self._next_orphan(set_key, registry, base.snapshot)
            except _redis_errors() as err:
                raise failed_early(err) from err
            if not handed_over and orphan is None:
                return InvalidationReport(kind="tag", target=tag, matched=base.matched, removed=base.removed,
                                          batches=base.batches, duration_s=base.elapsed_s + self._clock() - start,
                                          complete=True, nodes=nodes, runs=base.runs + 1)
            base = replace(base, cursors={"set": 0}, snapshot=base.snapshot if handed_over else orphan)
        snapshot_key = base.snapshot or ""
        cursor = base.cursors.get("set", 0)
        finished = not base.cursors  # the members were drained; only the set's removal may remain
        progress = _Progress(base.matched, base.removed, base.batches)
        orphans = 0

        def snapshot() -> ScanCheckpoint:
            return replace(base, cursors={} if finished else {"set": cursor}, matched=progress.matched,
                           removed=progress.removed, batches=progress.batches, snapshot=snapshot_key,
                           elapsed_s=base.elapsed_s + (self._clock() - start), runs=base.runs + 1)

        try:
            while True:
                while not finished:
                    next_cursor, members = self._client.sscan(snapshot_key, cursor=cursor, count=count)
                    if members:
                        # Members leave the snapshot once unlinked, so a resumed page does not count them twice.
                        self._unlink_routed(list(dict.fromkeys(members)), progress, batch, pause,
                                            forget_from=snapshot_key)
                    cursor = int(next_cursor)
                    # A cursor from another server (restart, failover) may skip members: what was unlinked
                    # left the set, so the set is empty exactly when the drain is complete.
                    finished = cursor == 0 and int(self._client.scard(snapshot_key)) == 0
                    if not finished and time_budget_s is not None and self._clock() - start >= time_budget_s:
                        return self._report("tag", tag, snapshot(), nodes, complete=False)
                self._client.unlink(snapshot_key)
                self._client.srem(registry, snapshot_key)
                orphan = self._next_orphan(set_key, registry, snapshot_key)
                if orphan is None:
                    break
                snapshot_key, cursor, finished = orphan, 0, False
                orphans += 1
        except _redis_errors() as err:
            raise InvalidationInterrupted(self._report("tag", tag, snapshot(), nodes, complete=False), err) from err
        return self._report("tag", tag, snapshot(), nodes, complete=True)

    def sweep_purges(self, live: Callable[[str, str], bool], *, time_budget_s: float | None = None,
                     sscan_count: int = DEFAULT_SSCAN_COUNT) -> dict[str, Any]:
        """Finish every tag purge (`tag:{ns:tag}:purging:<id>`) of this namespace that no run in progress owns
        (`live(tag, snapshot)`): the periodic sweep behind the next-request rule of `delete_tag`. One SCAN of the
        keyspace; `complete` is False when the time budget ran out first (the next sweep goes on)."""
        _check_budget(time_budget_s)
        start = self._clock()
        head = f"tag:{{{self.tag_namespace}:"
        match = _glob_escape(head) + "*}:purging:*"
        progress = _Progress()
        found = drained = skipped = 0
        complete = True
        try:
            for node in self._primaries():
                for raw in node.client.scan_iter(match=match, count=self.scan_count):
                    key = raw.decode() if isinstance(raw, bytes) else str(raw)
                    cut = key.rfind("}:purging:")
                    if cut < len(head):
                        continue
                    found += 1
                    tag = key[len(head):cut]
                    if live(tag, key):
                        skipped += 1
                        continue
                    if time_budget_s is not None and self._clock() - start >= time_budget_s:
                        complete = False
                        continue
                    cursor = None
                    while cursor != 0 or int(self._client.scard(key)):
                        next_cursor, members = self._client.sscan(key, cursor=cursor or 0, count=sscan_count)
                        if members:
                            self._unlink_routed(list(dict.fromkeys(members)), progress, self.batch_size,
                                                self.pause_s, forget_from=key)
                        cursor = int(next_cursor)
                    self._client.unlink(key)
                    self._client.srem(f"{key[:cut + 1]}:purging", key)
                    drained += 1
        except _redis_errors() as err:
            return {"status": "interrupted", "found": found, "drained": drained, "skipped_live": skipped,
                    "removed": progress.removed, "error": f"{type(err).__name__}: {str(err)[:200]}",
                    "complete": False}
        return {"status": "complete" if complete else "partial", "found": found, "drained": drained,
                "skipped_live": skipped, "removed": progress.removed, "complete": complete,
                "duration_s": round(self._clock() - start, 3)}

    def _hand_over(self, set_key: str, snapshot_key: str, registry: str) -> bool:
        """Rename the tag set to this run's private name; False if the tag has no set (nothing to do).

        Atomic: entries tagged from now on go to a fresh set, this run drains the old one. The snapshot is
        registered first (`registry`, same slot), so a purge that never finishes is found by the next run of
        the tag. Safe to repeat after a failure that hid whether the rename happened: an existing snapshot
        means it did.
        """
        from redis.exceptions import ResponseError

        if self._client.exists(snapshot_key):
            return True
        self._client.sadd(registry, snapshot_key)
        try:
            self._client.rename(set_key, snapshot_key)
        except ResponseError as err:
            if "no such key" in str(err).lower():
                self._client.srem(registry, snapshot_key)
                return False
            raise
        return True

    def _next_orphan(self, set_key: str, registry: str, current: str) -> str | None:
        """A registered purge other than `current` still to finish (its run is gone), or None."""
        for _ in range(100):
            member = self._client.srandmember(registry)
            if member is None:
                return None
            name = member.decode() if isinstance(member, bytes) else str(member)
            if name != current and name.startswith(f"{set_key}:purging:") and self._client.exists(name):
                return name
            self._client.srem(registry, member)  # finished, or not a purge of this tag: forget it
        return None

    def delete_tags(self, tags: Sequence[str], **options: Any) -> list[InvalidationReport]:
        """`delete_tag` for each tag in turn (validated all first: one bad tag means nothing is sent)."""
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise InvalidationInputError("tags", "must be a list of tags")
        if not tags:
            raise InvalidationInputError("tags", "must not be empty")
        for i, tag in enumerate(tags):
            try:
                tag_set_key(self.tag_namespace, tag)
            except CacheTagError as err:
                raise InvalidationInputError(f"tags[{i}]", str(err).split(": ", 1)[-1]) from None
        return [self.delete_tag(tag, **options) for tag in dict.fromkeys(tags)]

    # ------------------------------------------------------------------ flush
    def flush(self, *, confirm_name: str | None, cache_name: str, allowed: bool) -> InvalidationReport:
        """`FLUSHDB ASYNC` on every primary: only if `allowed` and `confirm_name == cache_name`."""
        check_flush_allowed(confirm_name=confirm_name, cache_name=cache_name, allowed=allowed)
        start = self._clock()
        nodes = self._primaries()
        matched = 0
        for node in nodes:
            matched += int(node.client.dbsize())
            # ASYNC: the keyspace is emptied at once, the memory is freed by a background thread.
            node.client.flushdb(asynchronous=True)
        return InvalidationReport(kind="flush", target=cache_name, matched=matched, removed=matched,
                                  batches=len(nodes), duration_s=self._clock() - start, complete=True,
                                  nodes=len(nodes))

    # ------------------------------------------------------------------ internals
    def _primaries(self) -> list[_Node]:
        if not self._cluster:
            return [_Node(STANDALONE_NODE, self._client)]
        return sorted((_Node(node.name, self._client.get_redis_connection(node))
                       for node in self._client.get_primaries()), key=lambda n: n.name)

    @staticmethod
    def _report(kind: Kind, target: str, cp: ScanCheckpoint, nodes: int, *, complete: bool) -> InvalidationReport:
        return InvalidationReport(kind=kind, target=target, matched=cp.matched, removed=cp.removed,
                                  batches=cp.batches, duration_s=cp.elapsed_s, complete=complete, nodes=nodes,
                                  runs=cp.runs, checkpoint=None if complete else cp, restarts=cp.restarts)

    def _unlink_on_node(self, node: _Node, keys: list[Key], progress: _Progress, batch: int, pause: float) -> None:
        """Unlink keys found on `node` through that node's own connection, one slot per command."""
        groups = self._slot_groups(keys) if self._cluster else [keys]
        self._run_batches(node.client, groups, progress, batch, pause)

    def _unlink_routed(self, keys: list[Key], progress: _Progress, batch: int, pause: float,
                       forget_from: str | None = None) -> None:
        """Unlink keys from anywhere in the keyspace: grouped by owning primary, then by slot.

        `forget_from`: a set to SREM each batch's keys from once they are unlinked (a tag's snapshot).
        """
        if not self._cluster:
            self._run_batches(self._client, [keys], progress, batch, pause, forget_from)
            return
        by_node: dict[str, tuple[Any, list[Key]]] = {}
        for key in keys:
            node = self._client.get_node_from_key(key)
            entry = by_node.setdefault(node.name, (node, []))
            entry[1].append(key)
        for _, (node, node_keys) in sorted(by_node.items()):
            client = self._client.get_redis_connection(node)
            self._run_batches(client, self._slot_groups(node_keys), progress, batch, pause, forget_from)

    def _slot_groups(self, keys: list[Key]) -> list[list[Key]]:
        groups: dict[int, list[Key]] = {}
        for key in keys:
            groups.setdefault(self._client.keyslot(key), []).append(key)
        return list(groups.values())

    def _run_batches(self, client: Any, groups: Iterable[list[Key]], progress: _Progress, batch: int,
                     pause: float, forget_from: str | None = None) -> None:
        pending = _Pending(client)
        for group in groups:
            for chunk in _chunks(group, min(KEYS_PER_UNLINK, batch)):
                if pending.pipe is None:
                    pending.pipe = client.pipeline(transaction=False)
                pending.pipe.unlink(*chunk)
                pending.commands.append(list(chunk))
                pending.keys += len(chunk)
                if pending.keys >= batch:
                    self._flush_pending(pending, progress, pause, forget_from)
        if pending.keys:
            self._flush_pending(pending, progress, pause, forget_from)

    def _flush_pending(self, pending: _Pending, progress: _Progress, pause: float,
                       forget_from: str | None) -> None:
        from redis.exceptions import ResponseError

        done = [key for keys in pending.commands for key in keys]
        # Standalone: the SREM rides in the same round trip, after the UNLINKs it follows. Cluster: the set
        # lives on its own node, so it is told once the UNLINKs have succeeded.
        same_trip = forget_from is not None and not self._cluster
        if same_trip:
            pending.pipe.srem(forget_from, *done)
        results = pending.pipe.execute(raise_on_error=False)
        if same_trip:
            forgotten = results.pop()
            if isinstance(forgotten, Exception):
                raise forgotten
        removed = 0
        for keys, result in zip(pending.commands, results, strict=True):
            if isinstance(result, ResponseError):
                if not str(result).startswith(("MOVED", "ASK")):
                    raise result
                # The slot moved (resharding) since we routed: let the cluster client follow it.
                removed += int(self._client.unlink(*keys))
            else:
                removed += int(result)
        if forget_from is not None and not same_trip:
            self._client.srem(forget_from, *done)
        progress.matched += pending.keys
        progress.removed += removed
        progress.batches += 1
        pending.pipe, pending.commands, pending.keys = None, [], 0
        if pause > 0:
            self._sleep(pause)


def _glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def purge_registry_key(set_key: str) -> str:
    """The set naming every purge of a tag in progress (`tag:{ns:tag}:purging`, the tag set's slot)."""
    return f"{set_key}:purging"


def _chunks(items: Sequence[Key], size: int) -> Iterator[Sequence[Key]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError,)


def _check_budget(time_budget_s: float | None) -> None:
    if time_budget_s is not None and not time_budget_s > 0:
        raise InvalidationInputError("time_budget_s", "must be positive")


def _coerce_checkpoint(value: ScanCheckpoint | Mapping[str, Any] | None, kind: str,
                       target: str) -> ScanCheckpoint | None:
    if value is None:
        return None
    checkpoint = value if isinstance(value, ScanCheckpoint) else ScanCheckpoint.from_dict(value)
    if checkpoint.kind != kind or checkpoint.target != target:
        raise InvalidationInputError(
            "checkpoint", f"belongs to the {checkpoint.kind} {checkpoint.target!r}, not the {kind} {target!r}")
    return checkpoint


def _resume_cursors(checkpoint: ScanCheckpoint | None, nodes: Mapping[str, _Node]) -> tuple[dict[str, int], set[str]]:
    """Cursors to continue from. A primary the checkpoint does not know (failover, new shard) starts at 0:
    SCAN cursors are only meaningful on the server that issued them, and unlinking twice is harmless."""
    if checkpoint is None:
        return {name: 0 for name in nodes}, set()
    done = {name for name in checkpoint.done if name in nodes}
    cursors = {name: checkpoint.cursors.get(name, 0) for name in nodes if name not in done}
    return cursors, done
