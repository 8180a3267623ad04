"""The shard map (bucket -> shard, per-bucket move state) and the move records, in DynamoDB.

Items in the state table (partition key `pk`), next to the guardrails' own:
  shardmap#<set>               the live map: version, bucket count, key type, owners (run-length encoded),
                               the states of buckets that are moving; written only conditionally on its version
  shardmap#<set>#v<version>    history: the map as each version left it, with what changed it (never expires)
  shardmove#<set>#<move>       one move: buckets, source, target, mode, phase, fence timings, copy cursors,
                               verification, written conditionally on its own version
We keep them in the state table (not a table of their own): the same backups, encryption and IAM as the
rest of Reflex's durable state, and a map is one small item (4,096 buckets run-length encode to a few
hundred bytes while they stay in ranges; at worst ~60 KB, under DynamoDB's 400 KB item limit). The states
of moving buckets are stored one entry per bucket (`{"<bucket>": {...}}`, the form earlier routers read) while
that stays under PER_BUCKET_STATES_LIMIT, and per move as bucket ranges above it (`[{"state", "move_id",
"source", "target", "buckets": "0-8191,9000"}]`: a large claim of contiguous buckets costs a few bytes, not
~90 per bucket); both are read. `ShardMap.item_bytes()` is what the item
would weigh: a claim that would take it past MAP_ITEM_BUDGET is refused before it is written (naming
`buckets`) -- as claimed and as its switch will leave it (owners rewritten: `ShardMap.claim_bytes`) -- and
`ShardMapStore.save` refuses to write one (MapTooLarge) rather than let DynamoDB answer an
opaque ValidationException.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from botocore.exceptions import ClientError

from shards.buckets import ranges

BucketStateName = Literal["copying", "fenced", "switched"]


# DynamoDB's item limit is 400 KB (names and values); keep a margin for the attribute names and growth.
MAP_ITEM_BUDGET = 350_000


# What a map's `change` (and its history item's) keeps of the text describing it: the bucket ranges of a move of
# scattered buckets run to tens of kilobytes, which the item (and the claim's size check) must not carry.
CHANGE_MAX_CHARS = 1000


def _capped(change: str) -> str:
    if len(change) <= CHANGE_MAX_CHARS:
        return change
    return change[:CHANGE_MAX_CHARS - 16] + " ... (truncated)"


class MapConflict(RuntimeError):
    """The map (or a move record) changed since it was read: re-read and retry."""


class MapTooLarge(ValueError):
    """The map item would exceed MAP_ITEM_BUDGET (too many moving buckets, or owners too scattered)."""


@dataclass
class BucketState:
    state: BucketStateName
    move_id: str
    source: str
    target: str


@dataclass
class ShardMap:
    set_name: str
    buckets: int
    key_type: str
    owners: list[str]
    version: int = 0
    states: dict[int, BucketState] = field(default_factory=dict)
    updated_at: float = 0.0
    change: str = ""

    def shard_of(self, bucket: int) -> str:
        return self.owners[bucket]

    def buckets_of(self, shard: str) -> list[int]:
        return [b for b, s in enumerate(self.owners) if s == shard]

    def moving(self) -> dict[int, BucketState]:
        return dict(self.states)

    def to_item(self) -> dict[str, Any]:
        return {
            "pk": {"S": f"shardmap#{self.set_name}"},
            "version": {"N": str(self.version)},
            "buckets": {"N": str(self.buckets)},
            "key_type": {"S": self.key_type},
            "owners": {"S": json.dumps(encode_owners(self.owners))},
            "states": {"S": states_json(self.states)},
            "updated_at": {"N": repr(self.updated_at)},
            "change": {"S": self.change or "-"},
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ShardMap:
        states = decode_states(json.loads(item["states"]["S"]))
        return cls(set_name=item["pk"]["S"].split("#", 1)[1], buckets=int(item["buckets"]["N"]),
                   key_type=item["key_type"]["S"], owners=decode_owners(json.loads(item["owners"]["S"])),
                   version=int(item["version"]["N"]), states=states, updated_at=float(item["updated_at"]["N"]),
                   change=item.get("change", {}).get("S", ""))


    def item_bytes(self) -> int:
        """The size of this map's DynamoDB item (UTF-8 names and values, as DynamoDB counts them, roughly)."""
        return sum(len(k.encode()) + len(str(next(iter(v.values()))).encode()) for k, v in self.to_item().items())

    def claim_bytes(self, claims: list[tuple[str, list[int], str, str]]) -> int:
        """The largest item this map would be from claiming `claims` ((move id, buckets, source, target)) until
        every move it holds is switched: claimed as it is now (`copying`), and switched (owners rewritten to the
        targets, states `switched`) for the claimed moves alone and for every move of the map with them.
        Owners are run-length encoded: a switch of scattered buckets can weigh far more than the claim, and a
        switch that cannot be saved fails after the source is fenced and the target opened."""
        claimed = dict(self.states)
        for move_id, buckets, source, target in claims:
            for b in buckets:
                claimed[b] = BucketState("copying", move_id, source, target)
        new = {b for _, buckets, _, _ in claims for b in buckets}
        sizes = [self._trial(claimed, set()), self._trial(claimed, new), self._trial(claimed, set(claimed))]
        return max(sizes)

    def _trial(self, states: dict[int, BucketState], switched: set[int]) -> int:
        owners = list(self.owners)
        trial_states = dict(states)
        for b in switched:
            st = trial_states[b]
            owners[b] = st.target
            trial_states[b] = BucketState("switched", st.move_id, st.source, st.target)
        return ShardMap(set_name=self.set_name, buckets=self.buckets, key_type=self.key_type, owners=owners,
                        version=self.version + 1, states=trial_states, updated_at=self.updated_at,
                        change="-" * CHANGE_MAX_CHARS).item_bytes()


# The per-bucket form of `states` is what routers released before the range form read; it is written while it
# stays this small, so that an application still running such a router keeps reading the map during an upgrade.
# Larger claims (thousands of buckets) take the range form, which only current routers read.
PER_BUCKET_STATES_LIMIT = 100_000


def states_json(states: dict[int, BucketState]) -> str:
    per_bucket = json.dumps({str(b): asdict(s) for b, s in sorted(states.items())})
    return per_bucket if len(per_bucket) <= PER_BUCKET_STATES_LIMIT else json.dumps(encode_states(states))


def encode_states(states: dict[int, BucketState]) -> list[dict[str, Any]]:
    """Per (state, move, source, target), the buckets as ranges "a-b,c" (bucket order)."""
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for b, st in sorted(states.items()):
        groups.setdefault((st.state, st.move_id, st.source, st.target), []).append(b)
    return [{"state": k[0], "move_id": k[1], "source": k[2], "target": k[3], "buckets": ranges(bs)}
            for k, bs in groups.items()]


def decode_states(data: Any) -> dict[int, BucketState]:
    if isinstance(data, dict):  # the older form: one entry per bucket
        return {int(b): BucketState(**s) for b, s in data.items()}
    out: dict[int, BucketState] = {}
    for g in data:
        for part in str(g["buckets"]).split(","):
            lo, _, hi = part.partition("-")
            for b in range(int(lo), int(hi or lo) + 1):
                out[b] = BucketState(state=g["state"], move_id=g["move_id"], source=g["source"],
                                     target=g["target"])
    return out




def encode_owners(owners: list[str]) -> list[list[Any]]:
    """Run-length: [[shard, count], ...] in bucket order."""
    out: list[list[Any]] = []
    for s in owners:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


def decode_owners(runs: list[list[Any]]) -> list[str]:
    return [str(s) for s, n in runs for _ in range(int(n))]


@dataclass
class MoveRecord:
    """One move of buckets from a source shard to a target shard, and how far it got."""

    id: str
    set_name: str
    buckets: list[int]
    source: str
    target: str
    mode: str
    phase: str = "claimed"
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    paused: bool = False
    abort_requested: str = ""
    fence_started_at: float | None = None
    fence_ms: float | None = None
    verify_fence_ms: float | None = None  # online `snapshot` verification: the brief fence that took its snapshots
    switched_at: float | None = None
    grace_until: float | None = None
    copy_rows: dict[str, int] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    history: list[list[Any]] = field(default_factory=list)
    reason: str = ""
    # ShardMoved accepted by EventBridge for this switch (the reaction re-publishes until it is; at least once)
    moved_published: bool = False
    # A rollback after the switch announced the buckets back on the source (ShardMoved, source and target swapped,
    # `rolled_back: true`); the rollback ends only once it is (at least once)
    back_published: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "rolled_back")

    def is_move_of(self, buckets: list[int], source: str, target: str) -> bool:
        """Whether this record moves these buckets from source to target: a retry of the same move, not another
        move under a reused id (start() returns the record it finds under an id, whatever it moves)."""
        return sorted(set(self.buckets)) == sorted(set(buckets)) and (self.source, self.target) == (source, target)

    def to_item(self) -> dict[str, Any]:
        return {"pk": {"S": f"shardmove#{self.set_name}#{self.id}"}, "version": {"N": str(self.version)},
                "body": {"S": json.dumps(asdict(self), default=str)},
                "finished": {"BOOL": self.finished}}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> MoveRecord:
        # Fields this code does not know (written by a newer release: a deploy rolled back while moves are stored)
        # are ignored rather than failing every step of those moves.
        body = json.loads(item["body"]["S"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})


def _conditional(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class ShardMapStore:
    """Reads and conditionally writes maps and move records (one boto3 DynamoDB client, the state table)."""

    def __init__(self, dynamodb: Any, table: str, clock: Any = None) -> None:
        self.db = dynamodb
        self.table = table
        self._now = (lambda: clock.now().timestamp()) if clock is not None else time.time

    # ------------------------------------------------------------------ map
    def load(self, set_name: str) -> ShardMap | None:
        resp = self.db.get_item(TableName=self.table, Key={"pk": {"S": f"shardmap#{set_name}"}}, ConsistentRead=True)
        item = resp.get("Item")
        return ShardMap.from_item(item) if item else None

    def ensure(self, set_name: str, buckets: int, key_type: str, owners: list[str]) -> ShardMap:
        """The set's map, created from the initial placement the first time (version 1)."""
        current = self.load(set_name)
        if current is not None:
            return current
        fresh = ShardMap(set_name=set_name, buckets=buckets, key_type=key_type, owners=list(owners))
        try:
            return self.save(fresh, "created from the configured placement")
        except MapConflict:
            loaded = self.load(set_name)
            assert loaded is not None
            return loaded

    def save(self, new: ShardMap, change: str) -> ShardMap:
        """Write `new` as version+1 if the stored version is still `new.version`; record the history."""
        expected = new.version
        change = _capped(change)
        saved = ShardMap(set_name=new.set_name, buckets=new.buckets, key_type=new.key_type, owners=list(new.owners),
                         version=expected + 1, states=dict(new.states), updated_at=self._now(), change=change)
        size = saved.item_bytes()
        if size > MAP_ITEM_BUDGET:
            raise MapTooLarge(f"buckets: the shard map {new.set_name} would be a {size:,}-byte item (at most "
                              f"{MAP_ITEM_BUDGET:,}; DynamoDB's limit is 400 KB): {len(new.states)} moving "
                              "bucket(s); move fewer (or contiguous) buckets at a time")
        cond: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"} if expected == 0 else
            {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(expected)}}})
        try:
            self.db.put_item(TableName=self.table, Item=saved.to_item(), **cond)
        except ClientError as err:
            if _conditional(err):
                raise MapConflict(f"shard map {new.set_name} changed since version {expected}") from None
            raise
        history = saved.to_item() | {"pk": {"S": f"shardmap#{new.set_name}#v{saved.version}"}}
        self.db.put_item(TableName=self.table, Item=history)
        return saved

    def history(self, set_name: str, version: int) -> ShardMap | None:
        resp = self.db.get_item(TableName=self.table, Key={"pk": {"S": f"shardmap#{set_name}#v{version}"}},
                                ConsistentRead=True)
        item = resp.get("Item")
        if not item:
            return None
        item = item | {"pk": {"S": f"shardmap#{set_name}"}}
        return ShardMap.from_item(item)

    # ------------------------------------------------------------------ moves
    def load_move(self, set_name: str, move_id: str) -> MoveRecord | None:
        resp = self.db.get_item(TableName=self.table, Key={"pk": {"S": f"shardmove#{set_name}#{move_id}"}},
                                ConsistentRead=True)
        item = resp.get("Item")
        return MoveRecord.from_item(item) if item else None

    def save_move(self, move: MoveRecord, note: str = "") -> MoveRecord:
        expected = move.version
        move.version = expected + 1
        move.updated_at = self._now()
        if note:
            move.history.append([round(move.updated_at, 3), move.phase, note[:300]])
            del move.history[:-100]
        cond: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"} if expected == 0 else
            {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(expected)}}})
        try:
            self.db.put_item(TableName=self.table, Item=move.to_item(), **cond)
        except ClientError as err:
            move.version = expected
            if _conditional(err):
                raise MapConflict(f"move {move.id} changed since version {expected}") from None
            raise
        return move

    def moves(self, set_name: str, *, unfinished_only: bool = True) -> list[MoveRecord]:
        """The set's move records (a scan by key prefix: moves are few; the table is small)."""
        out: list[MoveRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": {"S": f"shardmove#{set_name}#"}}, "ConsistentRead": True}
        while True:
            resp = self.db.scan(**kwargs)
            out.extend(MoveRecord.from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        if unfinished_only:
            out = [m for m in out if not m.finished]
        return sorted(out, key=lambda m: (m.created_at, m.id))
