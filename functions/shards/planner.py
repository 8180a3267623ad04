"""Shard planner: the fewest bytes to move so that every shard is within tolerance of its weighted share.

Pure Python, no I/O, deterministic (every sort has a total order: value, then bucket id or shard position).

Model. Each bucket (a hash bucket of a shard set) lives on one shard and has a size in bytes and a load.
`PlanSettings.metric` says what is balanced ("bytes" or "load"); moving a bucket always costs its bytes.
An accepting shard's share is `total * weight / sum(weights of accepting shards)` and its band is
`share * (1 +- tolerance)`; a shard that does not accept (draining) has share 0 and a band of [0, 0].

Algorithm (each step deterministic):
1. Donors. A shard above its band must give at least its surplus (metric - upper bound) and at most
   metric - lower bound (it must not fall under its own band). A non-accepting shard gives everything. If
   the shards under their band need more than that in all (adding a shard), the extra is taken by water
   filling: the most utilised shards (relative to share) come down first, never under their lower bound.
2. Selection per donor (a knapsack-like choice that removes "just enough"): buckets in decreasing order of
   metric per byte (for bytes: largest first) are taken while they do not overshoot what remains; then the
   cheapest bucket that finishes the job within the donor's window (smallest overshoot) is added. Load:
   the exact covering knapsack (fewest bytes carrying at least the surplus, at most the window) competes,
   by a bounded branch and bound (`_cover_search`), and the cheapest choice wins.
3. Assignment (best fit decreasing): the pooled buckets, largest first, go to the receiver with the largest
   remaining deficit that can take them without leaving its band; once deficits are filled, to the
   receiver with the most room. A drained bucket that fits nowhere goes to the least utilised receiver.
   Deficits left after the assignment are filled by the cheapest covering bucket of a shard above its
   lower bound (load: or the cheapest covering set of one such shard's buckets).
   Candidates (`_best_candidate`): besides this plan, a relaxed one in which a bucket bigger than any
   receiver's room moves anyway and that receiver passes the overflow on; for load also the variants with
   exact covering choices and set-based filling, and the overflowing bucket sent to the receivers with the
   most room, within a work budget. The plan with the least left outside the bands, then the fewest bytes,
   wins (on a tie, the original plan).
4. Local improvement: a move that is not needed any more is dropped (both ends stay in band without it);
   a move is replaced by a cheaper bucket of the same source when both ends stay in band.
5. improvement_threshold: moves are applied in order (drains first, then largest first) and a move whose
   gain (the reduction of the out-of-band excess of its source and target) is below
   `improvement_threshold` x the bucket's metric is skipped, as Citus does (no 1 TB move to win 10 GB).
6. max_moves keeps the drains, then the moves with the best gain per unit moved.
7. Waves: moves are packed into waves in which no shard takes part in more than its
   `max_concurrent_moves` moves; the plan lists moves wave by wave, so the first waves touch distinct
   shards. Predicted duration: the sum over waves of the wave's largest move / throughput.

Lower bound (`Plan.lower_bound_bytes`): max(sum of surpluses over the bands, sum of deficits under the
bands). Every byte of surplus has to leave its shard and every byte of deficit has to arrive, so both are
lower bounds on the bytes moved; the second one is the binding one when a shard is added (the new shard
needs 90 % of a share while the others are only a little above their bands). For the load metric each is
converted to bytes by the exact covering knapsack (the fewest bytes that can carry that load; the fractional
knapsack when the search is too big), and the leaving side also counts what a bucket bigger than every
receiver's room costs the shard that must take it and pass the overflow on (`_pass_on_bound`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_REL_EPS = 1e-9


@dataclass(frozen=True)
class ShardInfo:
    """A shard of a shard set: its capacity weight, whether it takes buckets, its concurrency cap, and its
    capacity in bytes (`max_bytes`, None: unbounded): no planned move takes a shard past it."""

    name: str
    weight: float = 1.0
    accepting: bool = True
    max_concurrent_moves: int = 1
    max_bytes: int | None = None


@dataclass(frozen=True)
class BucketInfo:
    """A bucket: where it lives, its size in bytes and its load (any unit, e.g. CPU seconds per minute)."""

    bucket: int
    shard: str
    bytes: int
    load: float = 0.0


@dataclass(frozen=True)
class PlanSettings:
    """How to balance: tolerance band, improvement threshold, move cap, metric, predicted throughput."""

    tolerance: float = 0.10
    improvement_threshold: float = 0.0
    max_moves: int | None = None
    metric: Literal["bytes", "load"] = "bytes"
    throughput_bytes_per_s: float = 50e6


@dataclass(frozen=True)
class Move:
    """Move one bucket from source to target; `undo()` is the move that puts it back."""

    bucket: int
    source: str
    target: str
    bytes: int
    reason: str

    def undo(self) -> Move:
        return Move(
            bucket=self.bucket,
            source=self.target,
            target=self.source,
            bytes=self.bytes,
            reason=f"undo: move bucket {self.bucket} back from {self.target} to {self.source}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "source": self.source,
            "target": self.target,
            "bytes": self.bytes,
            "reason": self.reason,
            "undo": {"bucket": self.bucket, "source": self.target, "target": self.source},
        }


@dataclass(frozen=True)
class Plan:
    """The moves (wave by wave), their cost, the bound they are measured against, and why."""

    moves: list[Move]
    bytes_moved: int
    lower_bound_bytes: int
    before: dict[str, float]
    after: dict[str, float]
    predicted_duration_s: float
    explanation: list[str]
    # waves[i] = indexes into `moves` that may run together (each shard within its max_concurrent_moves).
    waves: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "moves": [dict(move.to_dict(), wave=self.wave_of(index)) for index, move in enumerate(self.moves)],
            "bytes_moved": self.bytes_moved,
            "lower_bound_bytes": self.lower_bound_bytes,
            "before": dict(self.before),
            "after": dict(self.after),
            "predicted_duration_s": self.predicted_duration_s,
            "waves": [list(wave) for wave in self.waves],
            "explanation": list(self.explanation),
        }

    def wave_of(self, index: int) -> int:
        for number, wave in enumerate(self.waves):
            if index in wave:
                return number
        raise IndexError(f"move {index} is in no wave")


# --------------------------------------------------------------------------- validation and model


class _Model:
    """Indexes and levels of one planning problem; every list is indexed by shard position."""

    def __init__(self, buckets: Sequence[BucketInfo], shards: Sequence[ShardInfo], settings: PlanSettings) -> None:
        _check_settings(settings)
        if not shards:
            raise ValueError("shards: at least one shard is required")
        self.names = [shard.name for shard in shards]
        self.index: dict[str, int] = {}
        for position, info in enumerate(shards):
            if not info.name:
                raise ValueError(f"shards[{position}].name: must not be empty")
            if info.name in self.index:
                raise ValueError(f"shards[{position}].name: duplicate shard {info.name!r}")
            if not (info.weight > 0 and math.isfinite(info.weight)):
                raise ValueError(f"shards[{position}].weight: must be a positive number, got {info.weight!r}")
            if info.max_concurrent_moves < 1:
                raise ValueError(
                    f"shards[{position}].max_concurrent_moves: must be at least 1, got {info.max_concurrent_moves}"
                )
            if info.max_bytes is not None and not (isinstance(info.max_bytes, int) and info.max_bytes >= 0):
                raise ValueError(f"shards[{position}].max_bytes: must be a non-negative integer or None, "
                                 f"got {info.max_bytes!r}")
            self.index[info.name] = position
        self.accepting = [shard.accepting for shard in shards]
        self.max_bytes = [shard.max_bytes for shard in shards]
        if not any(self.accepting):
            raise ValueError("shards: no shard accepts buckets (every shard has accepting=False)")
        self.concurrency = [shard.max_concurrent_moves for shard in shards]
        self.tolerance = settings.tolerance
        self.by_load = settings.metric == "load"

        seen: set[int] = set()
        index = self.index
        by_load = self.by_load
        ids: list[int] = []
        metric: list[float] = []
        cost: list[int] = []
        home: list[int] = []
        for position, bucket in enumerate(buckets):
            bucket_id, where, size, load = bucket.bucket, index.get(bucket.shard), bucket.bytes, bucket.load
            if bucket_id in seen or where is None or not size >= 0 or not (0 <= load < math.inf):
                raise _rejected(position, bucket, seen, index)
            seen.add(bucket_id)
            ids.append(bucket_id)
            metric.append(float(load) if by_load else float(size))
            cost.append(int(size))
            home.append(where)
        # Canonical order (by bucket id): the plan, down to float sums, does not depend on the input's order.
        order = sorted(range(len(ids)), key=ids.__getitem__)
        self.bucket_ids = [ids[i] for i in order]
        self.metric = [metric[i] for i in order]
        self.cost = [cost[i] for i in order]
        self.home = [home[i] for i in order]

        count = len(shards)
        self.level = [0.0] * count
        self.members: list[list[int]] = [[] for _ in range(count)]
        for item, shard in enumerate(self.home):
            self.level[shard] += self.metric[item]
            self.members[shard].append(item)
        self.total = sum(self.level)
        weights = sum(shard.weight for shard in shards if shard.accepting)
        self.share = [self.total * shard.weight / weights if shard.accepting else 0.0 for shard in shards]
        self.lo = [share * (1 - self.tolerance) for share in self.share]
        self.hi = [share * (1 + self.tolerance) for share in self.share]
        self.eps = max(self.total, 1.0) * _REL_EPS

    def excess(self, shard: int, level: float) -> float:
        """How far a level is outside the shard's band (0 inside)."""
        if level > self.hi[shard]:
            return level - self.hi[shard]
        if level < self.lo[shard]:
            return self.lo[shard] - level
        return 0.0

    def in_band(self, shard: int, level: float) -> bool:
        return self.lo[shard] - self.eps <= level <= self.hi[shard] + self.eps

    def min_bytes_for(self, amount: float, items: Iterable[int]) -> float:
        """A lower bound on the bytes of any set of these buckets carrying at least `amount` of metric.

        Bytes metric: the amount itself. Load: the exact covering knapsack (the cheapest set whose load
        reaches the amount, less the model's epsilon, which is what `in_band` forgives), found by branch and
        bound within `_COVER_NODES` nodes; when the search does not finish, the fractional knapsack (densest
        first, a fraction of the critical bucket) tightened by branching a few levels on the critical bucket.
        Both are lower bounds: the exact one is the minimum itself, the other relaxes it."""
        if amount <= 0:
            return 0.0
        if not self.by_load:
            return amount
        dense = sorted(
            (item for item in items if self.metric[item] > 0),
            key=lambda item: (-(self.metric[item] / self.cost[item]) if self.cost[item] else -math.inf, item),
        )
        metric = [self.metric[item] for item in dense]
        cost = [float(self.cost[item]) for item in dense]
        exact = _exact_cover(metric, cost, amount - self.eps, _COVER_NODES)
        if exact is not None:
            return exact if math.isfinite(exact) else float(sum(cost))
        branched = _cover_bound(metric, cost, amount, frozenset(), 6)
        # Nothing covers the amount (it cannot all leave): every one of these buckets' bytes is a bound.
        return branched if math.isfinite(branched) else float(sum(cost))


# Node budget of one exact covering knapsack (each node costs a bisection): a few ms in the worst case.
_COVER_NODES = 20_000
# Node budget of the exact covering choice a donor makes in `_select` (load metric); the greedy otherwise.
_SELECT_NODES = 5_000


def _exact_cover(metric: list[float], cost: list[float], need: float, budget: int) -> float | None:
    """The bytes of the cheapest subset whose metric adds up to at least `need` (items sorted densest first).

    inf when even all items fall short, None when the search needs more than `budget` nodes (the caller
    falls back to a relaxation). Scaled down by 1e-9 so that rounding in the prefix sums can never lift it
    above the true minimum (it is used as a lower bound)."""
    found = _cover_search(metric, cost, need, math.inf, budget)
    if found is None:
        return None
    spent, _ = found
    return spent * (1 - 1e-9)


def _cover_search(
    metric: list[float], cost: list[float], need: float, cap: float, budget: int
) -> tuple[float, list[int]] | None:
    """The cheapest subset (positions, in cost) whose metric is at least `need` and at most `cap`.

    Items are sorted densest first. Depth-first branch and bound (take the next densest item first, then
    leave it), pruned by the fractional (LP) bound from prefix sums, a relaxation of the same problem.
    (inf, []) when no subset qualifies; None when the search needs more than `budget` nodes."""
    if need <= 0:
        return 0.0, []
    count = len(metric)
    prefix_metric = [0.0] * (count + 1)
    prefix_cost = [0.0] * (count + 1)
    for index in range(count):
        prefix_metric[index + 1] = prefix_metric[index] + metric[index]
        prefix_cost[index + 1] = prefix_cost[index] + cost[index]
    if prefix_metric[count] < need:
        return math.inf, []

    def relaxed(start: int, remaining: float) -> float:
        # Items start.. densest first until the remaining need is met, a fraction of the last one.
        goal = prefix_metric[start] + remaining
        end = bisect.bisect_left(prefix_metric, goal, start + 1)
        if end > count:
            return math.inf
        critical = end - 1
        carried = prefix_metric[critical] - prefix_metric[start]
        return prefix_cost[critical] - prefix_cost[start] + cost[critical] * (remaining - carried) / metric[critical]

    best = math.inf
    best_path: tuple[int, Any] | None = None
    nodes = 0
    # (next position, metric still needed, cost so far, taken positions as a linked list)
    stack: list[tuple[int, float, float, tuple[int, Any] | None]] = [(0, need, 0.0, None)]
    while stack:
        nodes += 1
        if nodes > budget:
            return None
        start, remaining, spent, path = stack.pop()
        if remaining <= 0:
            if spent < best:
                best, best_path = spent, path
            continue
        if start == count or spent + relaxed(start, remaining) * (1 - 1e-12) >= best:
            continue
        # Leave the item (explored second), take it (explored first) unless that carries more than `cap`.
        stack.append((start + 1, remaining, spent, path))
        if need - remaining + metric[start] <= cap:
            stack.append((start + 1, remaining - metric[start], spent + cost[start], (start, path)))
    taken: list[int] = []
    while best_path is not None:
        taken.append(best_path[0])
        best_path = best_path[1]
    return best, taken[::-1]


def _cover_bound(metric: list[float], cost: list[float], need: float, excluded: frozenset[int], depth: int) -> float:
    """Bound on the cheapest cover of `need` (items sorted densest first); inf when nothing covers it."""
    spent = 0.0
    for index, value in enumerate(metric):
        if index in excluded:
            continue
        if value >= need:
            fractional = spent + cost[index] * need / value
            if depth == 0:
                return fractional
            forced = cost[index] + (
                _cover_bound(metric, cost, need - value, excluded | {index}, depth - 1) if need - value > 0 else 0.0
            )
            without = _cover_bound(metric, cost, need, excluded | {index}, depth - 1)
            return max(fractional, min(forced, without))
        need -= value
        spent += cost[index]
    return math.inf


def _rejected(position: int, bucket: BucketInfo, seen: set[int], index: dict[str, int]) -> ValueError:
    if bucket.bucket in seen:
        return ValueError(f"buckets[{position}].bucket: duplicate bucket {bucket.bucket}")
    if bucket.shard not in index:
        return ValueError(f"buckets[{position}].shard: unknown shard {bucket.shard!r}")
    if not bucket.bytes >= 0:
        return ValueError(f"buckets[{position}].bytes: must not be negative, got {bucket.bytes}")
    return ValueError(f"buckets[{position}].load: must be a non-negative finite number, got {bucket.load!r}")


def _check_settings(settings: PlanSettings) -> None:
    if not (0 <= settings.tolerance < 1):
        raise ValueError(f"settings.tolerance: must be in [0, 1), got {settings.tolerance!r}")
    if not (settings.improvement_threshold >= 0 and math.isfinite(settings.improvement_threshold)):
        raise ValueError(
            f"settings.improvement_threshold: must be a non-negative number, got {settings.improvement_threshold!r}"
        )
    if settings.max_moves is not None and settings.max_moves < 0:
        raise ValueError(f"settings.max_moves: must not be negative, got {settings.max_moves}")
    if settings.metric not in ("bytes", "load"):
        raise ValueError(f"settings.metric: must be 'bytes' or 'load', got {settings.metric!r}")
    if not (settings.throughput_bytes_per_s > 0):
        raise ValueError(
            f"settings.throughput_bytes_per_s: must be positive, got {settings.throughput_bytes_per_s!r}"
        )


# --------------------------------------------------------------------------- planning steps


def _least_removal(model: _Model, shard: int, surplus: float) -> float:
    """A lower bound on the metric a shard must give to lose `surplus` (bytes metric only).

    If the buckets smaller than the surplus cannot add up to it, at least one bucket at least as big as
    the surplus must leave: the smallest such bucket is a lower bound."""
    if model.by_load or not model.accepting[shard]:
        return surplus
    small = 0.0
    smallest_big = math.inf
    for item in model.members[shard]:
        value = model.metric[item]
        if value < surplus:
            small += value
        elif value < smallest_big:
            smallest_big = value
    if small >= surplus or smallest_big == math.inf:
        return surplus
    return smallest_big


def _lower_bound(model: _Model) -> int:
    """max(bytes that must leave the shards over their band, bytes that must arrive at those under it).

    Every plan that ends in band moves at least both: a shard over its band gives at least its surplus
    (at least one whole bucket as big as the surplus when the smaller ones cannot add up to it), a shard
    under its band receives at least its deficit, and a shard that has to give more than down to its lower
    bound must receive the difference back. For the load metric both sides are converted to bytes by the
    exact covering knapsack (the fewest bytes of the shard's own buckets that carry that load; see
    `min_bytes_for`), and the leaving side also counts what a bucket too big for any receiver's room costs
    the shard that takes it (`_pass_on_bound`)."""
    out_bytes = 0.0
    in_metric = 0.0
    donors: dict[int, float] = {}  # shard -> load it must give
    for shard in range(len(model.names)):
        level = model.level[shard]
        surplus = level - model.hi[shard]
        if surplus > model.eps:
            removal = _least_removal(model, shard, surplus)
            donors[shard] = removal
            out_bytes += model.min_bytes_for(removal, model.members[shard])
            if model.accepting[shard]:
                in_metric += max(0.0, model.lo[shard] - (level - removal))
        elif model.accepting[shard]:
            in_metric += max(0.0, model.lo[shard] - level)
    if model.by_load and donors:
        out_bytes = max(out_bytes, _pass_on_bound(model, donors))
    if in_metric <= model.eps:
        in_bytes = 0.0
    elif model.by_load:
        in_bytes = model.min_bytes_for(in_metric, range(len(model.metric)))
    else:
        in_bytes = in_metric
    return math.floor(max(out_bytes, in_bytes) + 1e-6)


# At most this many (type vector, target assignment) combinations are enumerated by `_pass_on_bound`.
_PASS_ON_COMBINATIONS = 20_000


def _pass_on_bound(model: _Model, donors: dict[int, float]) -> float:
    """Load metric: the bytes leaving all shards, counting what a too-big bucket costs the shard taking it.

    Why it is a lower bound for every plan that ends in band (each bucket moves at most once, from its home):
    let room(t) = hi(t) - level(t) (+ epsilon) for an accepting shard t and R(s) the largest room of the
    accepting shards other than s. A donor s either gives no bucket heavier than R(s), then its own
    buckets leaving cost at least A(s) = the covering knapsack of its need over its buckets of load <= R(s);
    or it gives one, of load >= L(s) (its lightest bucket above R(s)), at least g(s) = the covering knapsack
    over all its buckets. That bucket lands on some accepting t != s and overflows t's room, so t's own
    buckets must carry at least L(s) - room(t) away: t's leaving bytes are at least g_t(L(s) - room(t)); if
    t is a donor itself, at least g_t(need(t) + L(s)), of which its own term already counts c(t). A shard
    that takes several such buckets pays at least the largest of these, not their sum. The bytes moved are
    the sum over shards of the bytes leaving them, so the minimum over every choice (no big bucket / a big
    bucket to t, per donor) of the sum is a lower bound. Donors whose cheapest cover has no big bucket
    (A = g) never need the second choice. Returns the plain sum of g(s) when there are too many choices."""
    count = len(model.names)
    accepting = [shard for shard in range(count) if model.accepting[shard]]
    room = [model.hi[shard] - model.level[shard] + model.eps for shard in range(count)]
    own = {shard: list(model.members[shard]) for shard in range(count)}
    plain: dict[int, float] = {}
    no_big: dict[int, float] = {}
    lightest_big: dict[int, float] = {}
    for shard, need in donors.items():
        plain[shard] = model.min_bytes_for(need, own[shard])
        largest_room = max((room[t] for t in accepting if t != shard), default=-math.inf)
        small = [item for item in own[shard] if model.metric[item] <= largest_room]
        heavy = [model.metric[item] for item in own[shard] if model.metric[item] > largest_room]
        reachable = sum(model.metric[item] for item in small) >= need - model.eps
        no_big[shard] = model.min_bytes_for(need, small) if reachable else math.inf
        if heavy:
            lightest_big[shard] = min(heavy)
    choosers = sorted(shard for shard in donors if shard in lightest_big and no_big[shard] > plain[shard])
    fixed = sum(plain[shard] for shard in donors if shard not in choosers)
    if not choosers:
        return fixed
    targets = {shard: [t for t in accepting if t != shard] for shard in choosers}
    combinations = 0
    for mask in range(1 << len(choosers)):
        product = 1
        for position, shard in enumerate(choosers):
            if mask >> position & 1:
                product *= len(targets[shard])
        combinations += product
    if combinations > _PASS_ON_COMBINATIONS:
        return fixed + sum(plain[shard] for shard in choosers)

    penalties: dict[tuple[int, int, bool], float] = {}

    def penalty(shard: int, target: int, target_cost: float) -> float:
        # What `target` must give away beyond what is already counted for it (target_cost for a donor).
        load = lightest_big[shard]
        if target in donors:
            key = (shard, target, True)
            if key not in penalties:
                penalties[key] = model.min_bytes_for(donors[target] + load, own[target])
            return max(0.0, penalties[key] - target_cost)
        key = (shard, target, False)
        if key not in penalties:
            penalties[key] = model.min_bytes_for(load - room[target], own[target])
        return penalties[key]

    best = math.inf
    for mask in range(1 << len(choosers)):
        cost = {
            shard: (plain[shard] if mask >> position & 1 else no_big[shard]) for position, shard in enumerate(choosers)
        }
        base = fixed + sum(cost.values())
        if base >= best:
            continue
        big = [shard for position, shard in enumerate(choosers) if mask >> position & 1]
        counted = {shard: plain[shard] for shard in donors if shard not in choosers} | cost
        cheapest = math.inf
        for assignment in itertools.product(*(targets[shard] for shard in big)):
            charge: dict[int, float] = {}
            for shard, target in zip(big, assignment, strict=True):
                charge[target] = max(charge.get(target, 0.0), penalty(shard, target, counted.get(target, 0.0)))
            cheapest = min(cheapest, sum(charge.values()))
        best = min(best, base + (cheapest if big else 0.0))
    return best


def _surplus_targets(model: _Model) -> list[float]:
    """What each shard must give: everything off a non-accepting shard, the surplus over the band otherwise."""
    give = [0.0] * len(model.names)
    for shard in range(len(model.names)):
        if not model.accepting[shard]:
            give[shard] = model.level[shard]
        elif model.level[shard] > model.hi[shard] + model.eps:
            give[shard] = model.level[shard] - model.hi[shard]
    return give


def _water_fill(model: _Model, level: list[float], extra: float, donors: list[int]) -> dict[int, float]:
    """Free `extra` by lowering the most utilised donors (level / share) first, never under their band."""
    floor = 1 - model.tolerance
    donors = [shard for shard in donors if model.share[shard] > 0 and level[shard] > model.lo[shard] + model.eps]
    if not donors or extra <= model.eps:
        return {}

    def freed(u: float) -> float:
        return sum(max(0.0, level[shard] - max(u, floor) * model.share[shard]) for shard in donors)

    low, high = floor, max(level[shard] / model.share[shard] for shard in donors)
    if freed(low) <= extra:
        cut = low
    else:
        for _ in range(60):
            middle = (low + high) / 2
            if freed(middle) > extra:
                low = middle
            else:
                high = middle
        cut = low  # frees at least `extra`
    return {
        shard: level[shard] - max(cut, floor) * model.share[shard]
        for shard in donors
        if level[shard] - max(cut, floor) * model.share[shard] > model.eps
    }


def _select(
    model: _Model, shard: int, need: float, window: float, exclude: set[int], largest: float, exact: bool = True
) -> list[int]:
    """Buckets of `shard` removing at least `need` and at most `window` of metric, as few bytes as possible.

    A non-accepting shard gives every bucket. Otherwise buckets bigger than `largest` (the most room any
    receiver has) are left out: they fit nowhere. Candidates: (a) largest first (densest first for load)
    without overshooting, finished by the cheapest bucket that covers the rest; (b) for load, each densest
    prefix finished by the cheapest covering bucket (the classic covering-knapsack greedy). The cheapest
    valid candidate wins, then buckets it does not need are dropped, costliest first.
    """
    if not model.accepting[shard]:
        return [item for item in model.members[shard] if item not in exclude]
    if need <= model.eps:
        return []
    eps = model.eps
    limit = largest + eps
    metric, cost, ids = model.metric, model.cost, model.bucket_ids
    items = [item for item in model.members[shard] if item not in exclude and 0 < metric[item] <= limit]
    if model.by_load:
        order = sorted(
            items,
            key=lambda item: (-(metric[item] / cost[item]) if cost[item] else -math.inf, -metric[item], ids[item]),
        )
    else:
        order = sorted(items, key=lambda item: (-metric[item], ids[item]))

    def cheapest_cover(remaining: float, removed: float, skip: set[int]) -> int | None:
        best: int | None = None
        for item in order:
            if item in skip or metric[item] < remaining - eps or removed + metric[item] > window + eps:
                continue
            if best is None or (cost[item], metric[item], ids[item]) < (cost[best], metric[best], ids[best]):
                best = item
        return best

    candidates: list[list[int]] = []
    chosen: list[int] = []
    taken: set[int] = set()
    remaining, removed = need, 0.0
    for item in order:
        if metric[item] <= remaining + eps:
            chosen.append(item)
            taken.add(item)
            remaining -= metric[item]
            removed += metric[item]
            if remaining <= eps:
                break
    partial = list(chosen)
    if remaining > eps:
        finish = cheapest_cover(remaining, removed, taken)
        if finish is not None:
            candidates.append([*chosen, finish])
    else:
        candidates.append(chosen)
    alone = cheapest_cover(need, 0.0, set())
    if alone is not None:
        candidates.append([alone])
    if model.by_load:
        prefix: list[int] = []
        in_prefix: set[int] = set()
        removed = 0.0
        for step, item in enumerate(order):
            if step > 256:
                break
            finish = cheapest_cover(need - removed, removed, in_prefix)
            if finish is not None:
                candidates.append([*prefix, finish])
            if removed + metric[item] > window + eps:
                continue
            prefix.append(item)
            in_prefix.add(item)
            removed += metric[item]
            if removed >= need - eps:
                candidates.append(list(prefix))
                break
    if model.by_load and exact:
        # The exact covering knapsack within the window, when the search is small enough (it usually is:
        # only the densest buckets matter); the greedy candidates above are the fallback.
        found = _cover_search(
            [metric[item] for item in order], [float(cost[item]) for item in order], need - eps, window + eps,
            _SELECT_NODES,
        )
        if found is not None and found[1]:
            candidates.append([order[position] for position in found[1]])
    if not candidates:
        return partial
    best = min(candidates, key=lambda picked: (sum(cost[item] for item in picked), len(picked)))
    # Drop what is not needed, costliest first.
    total = sum(metric[item] for item in best)
    for item in sorted(best, key=lambda item: (-cost[item], ids[item])):
        if total - metric[item] >= need - eps:
            best.remove(item)
            total -= metric[item]
    return best


class _State:
    """Levels while moves are assigned and improved; `moves` maps bucket item -> target shard."""

    def __init__(self, model: _Model) -> None:
        self.model = model
        self.level = list(model.level)
        self.moves: dict[int, int] = {}

    def apply(self, item: int, target: int) -> None:
        self.level[self.model.home[item]] -= self.model.metric[item]
        self.level[target] += self.model.metric[item]
        self.moves[item] = target

    def revert(self, item: int) -> None:
        target = self.moves.pop(item)
        self.level[target] -= self.model.metric[item]
        self.level[self.model.home[item]] += self.model.metric[item]


def _assign(
    model: _Model,
    state: _State,
    pool: list[int],
    receivers: list[int],
    overflow: bool,
    prefer: dict[int, int] | None = None,
    overflowed: list[int] | None = None,
) -> list[int]:
    """Assign pooled buckets (already removed from their sources) to receivers; return unplaced ones.

    A bucket that fits no receiver within its band stays home, unless it is drained or `overflow` is set:
    then it goes to the receiver `prefer` names for it, else to the least utilised receiver (and is listed
    in `overflowed`)."""
    unplaced: list[int] = []
    for item in sorted(pool, key=lambda item: (-model.metric[item], model.bucket_ids[item])):
        value = model.metric[item]
        best: int | None = None
        best_key: tuple[float, ...] = ()
        for shard in receivers:
            level = state.level[shard]
            if level + value > model.hi[shard] + model.eps:
                continue
            deficit = model.lo[shard] - level
            # Largest deficit first; without deficits, the most relative room.
            room = (model.hi[shard] - level) / model.share[shard] if model.share[shard] else 0.0
            key = (1.0 if deficit > model.eps else 0.0, deficit if deficit > model.eps else room, -shard)
            if best is None or key > best_key:
                best, best_key = shard, key
        if best is None and (overflow or not model.accepting[model.home[item]]):
            # A drained bucket must go somewhere: the least utilised receiver.
            candidates = receivers or [s for s in range(len(model.names)) if model.accepting[s]]
            if prefer is not None and prefer.get(item) in candidates:
                best = prefer[item]
            else:
                best = min(
                    candidates,
                    key=lambda shard: (
                        (state.level[shard] + value) / model.share[shard] if model.share[shard] else 0.0,
                        shard,
                    ),
                )
            if overflowed is not None:
                overflowed.append(item)
        if best is None:
            state.level[model.home[item]] += value  # stays home
            unplaced.append(item)
            continue
        state.level[best] += value
        state.moves[item] = best
    return unplaced


def _repair(model: _Model, state: _State, exact: bool = True, sets: bool = True) -> None:
    """Fill what is left of the deficits bucket by bucket: for the neediest shard, the cheapest bucket of a
    shard above its band's lower bound that covers the deficit without pushing either end out of band
    (or, when none covers it, the largest that fits, then again). Load metric: or the cheapest set of one
    such shard's buckets that covers it (that shard's covering choice), when it costs fewer bytes."""
    count = len(model.names)
    received = set(state.moves.values())
    donors = [
        shard for shard in range(count)
        if model.accepting[shard] and shard not in received and state.level[shard] > model.lo[shard] + model.eps
    ]
    unmoved: dict[int, list[tuple[float, int, int]]] = {}

    def unmoved_of(shard: int) -> list[tuple[float, int, int]]:
        if shard not in unmoved:
            unmoved[shard] = sorted(
                (model.metric[item], model.bucket_ids[item], item)
                for item in model.members[shard]
                if item not in state.moves and model.metric[item] > 0
            )
        return unmoved[shard]

    for _ in range(len(model.metric) + 1):
        needy = [
            (model.lo[shard] - state.level[shard], -shard)
            for shard in range(count)
            if model.accepting[shard] and state.level[shard] < model.lo[shard] - model.eps
        ]
        if not needy:
            return
        deficit, negative = max(needy)
        receiver = -negative
        room = model.hi[receiver] - state.level[receiver]
        best: tuple[int, int, int, int] | None = None  # (cost, bucket id, item, donor) covering the deficit
        partial: tuple[float, int, int, int] | None = None  # (-metric, bucket id, item, donor) the largest fit
        for donor in donors:
            if donor == receiver:
                continue
            candidates = unmoved_of(donor)
            upper = min(state.level[donor] - model.lo[donor], room) + model.eps
            start = bisect.bisect_left(candidates, (deficit - model.eps, -math.inf, -1))
            for position in range(start, len(candidates)):
                value, bucket_id, item = candidates[position]
                if value > upper:
                    break
                key = (model.cost[item], bucket_id, item, donor)
                if best is None or key < best:
                    best = key
                if not model.by_load:
                    break
            below = bisect.bisect_left(candidates, (min(deficit, upper), -math.inf, -1)) - 1
            if below >= 0:
                value, bucket_id, item = candidates[below]
                key_partial = (-value, bucket_id, item, donor)
                if value <= upper and (partial is None or key_partial < partial):
                    partial = key_partial
        chosen = [(best[2], best[3])] if best is not None else ([(partial[2], partial[3])] if partial else [])
        if model.by_load and sets:
            # Load: a few small dense buckets of one donor often carry the deficit for fewer bytes than any
            # single bucket; the donor's own covering choice (`_select`, within both ends' bands) competes.
            cheapest = best[0] if best is not None else math.inf
            moved = set(state.moves)
            for donor in donors:
                if donor == receiver:
                    continue
                window = min(state.level[donor] - model.lo[donor], room)
                picked = _select(model, donor, deficit, window, moved, room, exact)
                carried = sum(model.metric[item] for item in picked)
                spent = sum(model.cost[item] for item in picked)
                if picked and deficit - model.eps <= carried <= window + model.eps and spent < cheapest:
                    cheapest, chosen = spent, [(item, donor) for item in picked]
        if not chosen:
            return
        for item, donor in chosen:
            state.apply(item, receiver)
            entry = (model.metric[item], model.bucket_ids[item], item)
            listed = unmoved_of(donor)
            del listed[bisect.bisect_left(listed, entry)]


def _prune(model: _Model, state: _State) -> None:
    """Drop moves that are not needed: both ends stay in band (or no worse) without them."""
    for item in sorted(state.moves, key=lambda item: (-model.cost[item], model.bucket_ids[item])):
        source, target = model.home[item], state.moves[item]
        if not model.accepting[source]:
            continue
        value = model.metric[item]
        if model.in_band(source, state.level[source] + value) and model.in_band(target, state.level[target] - value):
            state.revert(item)


def _shrink(model: _Model, state: _State) -> None:
    """Replace a moved bucket by a cheaper one of the same source when both ends stay in band."""
    unmoved: dict[int, list[tuple[float, int, int]]] = {}
    for item in sorted(state.moves, key=lambda item: (-model.cost[item], model.bucket_ids[item])):
        source, target = model.home[item], state.moves[item]
        if not model.accepting[source]:
            continue
        if source not in unmoved:
            unmoved[source] = sorted(
                (model.metric[other], model.bucket_ids[other], other)
                for other in model.members[source]
                if other not in state.moves
            )
        if not unmoved[source]:
            continue
        value = model.metric[item]
        # Replacing `item` by `other` changes source by +(value - v') and target by -(value - v').
        source_slack_hi = model.hi[source] - state.level[source]
        target_slack_lo = state.level[target] - model.lo[target]
        low_value = value - min(source_slack_hi, target_slack_lo) - model.eps
        high_value = value + min(state.level[source] - model.lo[source], model.hi[target] - state.level[target])
        candidates = unmoved[source]
        start = bisect.bisect_left(candidates, (low_value, -math.inf, -1))
        best: int | None = None
        best_position = -1
        if model.by_load:
            for position in range(start, len(candidates)):
                other_value, _, other = candidates[position]
                if other_value > high_value + model.eps:
                    break
                cheaper = best is None or (model.cost[other], model.bucket_ids[other]) < (
                    model.cost[best], model.bucket_ids[best]
                )
                if model.cost[other] < model.cost[item] and cheaper:
                    best, best_position = other, position
        elif start < len(candidates):
            other_value, _, other = candidates[start]
            if other_value < value and model.cost[other] < model.cost[item]:
                best, best_position = other, start
        if best is None:
            continue
        state.revert(item)
        state.apply(best, target)
        del candidates[best_position]
        bisect.insort(candidates, (value, model.bucket_ids[item], item))


def _apply_threshold(
    model: _Model, ordered: list[int], targets: dict[int, int], threshold: float
) -> tuple[list[int], dict[int, float], list[int]]:
    """Apply moves in order; skip those whose gain per unit of metric is below the threshold."""
    level = list(model.level)
    kept: list[int] = []
    skipped: list[int] = []
    gains: dict[int, float] = {}
    for item in ordered:
        source, target = model.home[item], targets[item]
        value = model.metric[item]
        before = model.excess(source, level[source]) + model.excess(target, level[target])
        after = model.excess(source, level[source] - value) + model.excess(target, level[target] + value)
        gain = (before - after) / value if value > 0 else 0.0
        # A drained bucket always moves; any other move must reduce the excess, by at least the threshold.
        if model.accepting[source] and (before - after <= model.eps or gain < threshold):
            skipped.append(item)
            continue
        gains[item] = gain
        level[source] -= value
        level[target] += value
        kept.append(item)
    return kept, gains, skipped


def _waves(model: _Model, items: list[int], targets: dict[int, int]) -> list[list[int]]:
    """Pack moves (largest first) into the first wave where neither end is at its concurrency cap."""
    waves: list[list[int]] = []
    usage: list[dict[int, int]] = []
    first_open = [0] * len(model.names)  # no wave before this one has room for the shard
    for item in items:
        source, target = model.home[item], targets[item]
        number = max(first_open[source], first_open[target])
        while number < len(usage) and (
            usage[number].get(source, 0) >= model.concurrency[source]
            or usage[number].get(target, 0) >= model.concurrency[target]
        ):
            number += 1
        if number == len(usage):
            usage.append({})
            waves.append([])
        for shard in (source, target):
            usage[number][shard] = usage[number].get(shard, 0) + 1
            while first_open[shard] < len(usage) and usage[first_open[shard]].get(shard, 0) >= model.concurrency[shard]:
                first_open[shard] += 1
        waves[number].append(item)
    return waves


def _describe(model: _Model, shard: int, level: float) -> str:
    name = model.names[shard]
    if not model.accepting[shard]:
        return f"{name} does not accept buckets (draining)"
    share = model.share[shard]
    ratio = level / share if share else 0.0
    return f"{name} at {ratio:.1%} of its share"


def _reason(model: _Model, item: int, target: int) -> str:
    source = model.home[item]
    unit = "load" if model.by_load else "bytes"
    value = model.metric[item]
    value_text = f"{value:.6g} {unit}" if model.by_load else f"{int(value):,} bytes"
    if not model.accepting[source]:
        why = f"drain: {model.names[source]} does not accept buckets"
    elif model.level[source] > model.hi[source] + model.eps:
        why = f"surplus: {_describe(model, source, model.level[source])} (band +-{model.tolerance:.0%})"
    else:
        why = f"fill: {_describe(model, source, model.level[source])} gives to shards under their band"
    target_level = model.level[target]
    where = (
        f"{_describe(model, target, target_level)}, under its band"
        if target_level < model.lo[target] - model.eps
        else f"{_describe(model, target, target_level)}, room within its band"
    )
    return (
        f"{why}; bucket {model.bucket_ids[item]} ({value_text}) to {where}; "
        f"undo: move it back to {model.names[source]}"
    )


# --------------------------------------------------------------------------- entry points


def plan_rebalance(buckets: Sequence[BucketInfo], shards: Sequence[ShardInfo], settings: PlanSettings) -> Plan:
    """The moves that bring every shard within tolerance of its weighted share, moving as few bytes as possible.

    Shards with `accepting=False` are emptied (as in Citus, where a node that should not have shards is
    drained by the rebalancer). Raises ValueError for impossible input.
    """
    model = _Model(buckets, shards, settings)
    return _plan(model, settings, drain=None)


def plan_drain(
    buckets: Sequence[BucketInfo], shards: Sequence[ShardInfo], drain: str, settings: PlanSettings
) -> Plan:
    """Every bucket off `drain`, the other shards left within tolerance of their new shares."""
    names = [shard.name for shard in shards]
    if drain not in names:
        raise ValueError(f"drain: unknown shard {drain!r} (known: {', '.join(names) or 'none'})")
    others = [shard for shard in shards if shard.name != drain and shard.accepting]
    if not others:
        raise ValueError(f"drain: cannot drain {drain!r}, it is the last shard that accepts buckets")
    marked = [
        ShardInfo(shard.name, shard.weight, False, shard.max_concurrent_moves) if shard.name == drain else shard
        for shard in shards
    ]
    model = _Model(buckets, marked, settings)
    return _plan(model, settings, drain=drain)


def _fit_capacity(model: _Model, kept: list[int], targets: dict[int, int], explanation: list[str]) -> list[int]:
    """Capacity (`ShardInfo.max_bytes`, in bytes whatever the metric): the moves in plan order (drains first);
    a move that would take its target past max_bytes goes to the accepting shard (not its source) with room
    that is furthest under its band instead, or is left out; both are explained. Updates `targets`."""
    if all(cap is None for cap in model.max_bytes):
        return kept
    held = [0] * len(model.names)
    for item, shard in enumerate(model.home):
        held[shard] += model.cost[item]
    level = list(model.level)

    def room(shard: int, size: int) -> bool:
        cap = model.max_bytes[shard]
        return cap is None or held[shard] + size <= cap

    out: list[int] = []
    for item in kept:
        source, target, size = model.home[item], targets[item], model.cost[item]
        if not room(target, size):
            others = sorted(
                (level[shard] - model.hi[shard], shard)
                for shard in range(len(model.names))
                if shard not in (source, target) and model.accepting[shard] and room(shard, size)
            )
            cap = model.max_bytes[target]
            if not others:
                explanation.append(
                    f"bucket {model.bucket_ids[item]} ({size:,} bytes) stays on {model.names[source]}: "
                    f"{model.names[target]} would exceed its max_bytes {cap:,} and no other shard has room"
                )
                continue
            explanation.append(
                f"bucket {model.bucket_ids[item]} ({size:,} bytes) goes to {model.names[others[0][1]]}, not "
                f"{model.names[target]}, which would exceed its max_bytes {cap:,}"
            )
            target = targets[item] = others[0][1]
        held[source] -= size
        held[target] += size
        level[source] -= model.metric[item]
        level[target] += model.metric[item]
        out.append(item)
    return out


def _outside(model: _Model, level: list[float]) -> float:
    return sum(model.excess(shard, level[shard]) for shard in range(len(model.names)))


def _ordered(model: _Model, state: _State) -> list[int]:
    """Drains first, then in the order the moves were decided (a receiver passes a surplus on only after it
    received it; a donor's finishing bucket comes after its big ones)."""
    chronological = {item: position for position, item in enumerate(state.moves)}
    return sorted(state.moves, key=lambda item: (model.accepting[model.home[item]], chronological[item]))


def _score(model: _Model, state: _State, threshold: float, final: bool = True) -> tuple[float, int]:
    """Plans compare by what stays outside the bands (to a tolerance), then by bytes moved, both measured on
    the moves that survive the improvement threshold (what the plan will list; `final`) or on the state."""
    kept = _apply_threshold(model, _ordered(model, state), state.moves, threshold)[0] if final else list(state.moves)
    level = list(model.level)
    for item in kept:
        level[model.home[item]] -= model.metric[item]
        level[state.moves[item]] += model.metric[item]
    return (round(_outside(model, level) / max(model.total, 1.0), 9), sum(model.cost[item] for item in kept))


def _solve(
    model: _Model, relaxed: bool, prefer: dict[int, int] | None = None, exact: bool = True, sets: bool = True
) -> tuple[_State, int, list[int]]:
    """Select, assign, repair and improve; `relaxed` lets a bucket overflow a receiver that then gives back
    (to the receiver `prefer` names for it, else the least utilised). Returns the state, the number of
    buckets placed nowhere, and the buckets that overflowed their receiver in the first assignment."""
    count = len(model.names)
    state = _State(model)
    taken: set[int] = set()
    givers: set[int] = set()
    unplaced: list[int] = []

    def take(shard: int, need: float, pool: list[int], largest: float) -> None:
        # A donor must not fall under its band; relaxed, it may (a lone huge bucket), the repair refills it.
        floor = model.lo[shard] if model.accepting[shard] and not relaxed else 0.0
        for item in _select(model, shard, need, state.level[shard] - floor, taken, largest, exact):
            pool.append(item)
            taken.add(item)
            state.level[shard] -= model.metric[item]
        givers.add(shard)

    def deficit_of(receivers: list[int]) -> float:
        return sum(max(0.0, model.lo[shard] - state.level[shard]) for shard in receivers)

    receivers = [shard for shard in range(count) if model.accepting[shard] and model.level[shard] <= model.hi[shard]]
    # A bucket bigger than the largest room on any receiver cannot move anywhere useful (unless relaxed).
    largest = math.inf if relaxed else max((model.hi[s] - model.level[s] for s in receivers), default=0.0)
    pool: list[int] = []
    for shard, need in enumerate(_surplus_targets(model)):
        if need > model.eps:
            take(shard, need, pool, largest if model.accepting[shard] else math.inf)
    receivers = [shard for shard in range(count) if model.accepting[shard] and shard not in givers]
    extra = deficit_of(receivers) - sum(model.metric[item] for item in pool)
    if extra > model.eps:
        # Shards under their band need more than the surpluses (a new shard, a drained shard's share):
        # the most utilised shards give the rest, down to a common level, never under their band.
        donors = [shard for shard in range(count) if model.accepting[shard] and model.level[shard] > model.lo[shard]]
        for shard, need in sorted(_water_fill(model, state.level, extra, donors).items()):
            take(shard, need, pool, largest)
        receivers = [shard for shard in range(count) if model.accepting[shard] and shard not in givers]
    overflowed: list[int] = []
    unplaced += _assign(model, state, pool, receivers, overflow=relaxed, prefer=prefer, overflowed=overflowed)
    for _ in range(4 if relaxed else 0):
        over = [s for s in range(count) if model.accepting[s] and state.level[s] > model.hi[s] + model.eps]
        if not over:
            break
        pool = []
        for shard in over:
            take(shard, state.level[shard] - model.hi[shard], pool, math.inf)
        receivers = [s for s in range(count) if model.accepting[s] and s not in over]
        unplaced += _assign(model, state, pool, receivers, overflow=False)
    _repair(model, state, exact, sets)
    _prune(model, state)
    _shrink(model, state)
    _prune(model, state)
    return state, len(unplaced), overflowed


# Load metric: at most this many overflowing buckets, and receivers per bucket, are tried by `_plan`.
_OVERFLOW_ITEMS = 1
_OVERFLOW_TARGETS = 4


def _overflow_alternatives(model: _Model, overflowed: list[int], state: _State) -> list[tuple[int, int]]:
    """(bucket, receiver) pairs to try for the buckets that overflowed every receiver's room.

    Per bucket (the heaviest first), the other accepting shards with the most room before the plan (the
    least it overflows them, so the least they must pass on), then by position; at most _OVERFLOW_TARGETS."""
    pairs: list[tuple[int, int]] = []
    heaviest = sorted(overflowed, key=lambda item: (-model.metric[item], model.bucket_ids[item]))
    for item in heaviest[:_OVERFLOW_ITEMS]:
        source, current = model.home[item], state.moves.get(item)
        ranked = sorted(
            (model.level[target] - model.hi[target], target)
            for target in range(len(model.names))
            if target not in (source, current) and model.accepting[target]
        )
        pairs += [(item, target) for _, target in ranked[:_OVERFLOW_TARGETS]]
    return pairs


# Load metric: at most this many bucket-solves (solves x buckets) are spent on candidate plans, so that a
# large shard set gets the planner's original two candidates and a small one all of them.
_CANDIDATE_WORK = 300_000


def _best_candidate(model: _Model, threshold: float) -> tuple[_State, int, str]:
    """Solve a few ways and keep the plan with the best score (what stays outside the bands, then bytes,
    after the improvement threshold; on a tie, the same before it; then the earlier candidate). Returns the
    state, the unplaced count, and the explanation line ("" for the first candidate).

    First the original candidates: greedy covering choices, deficits filled bucket by bucket, then (for
    the load metric, or when that ends outside a band) relaxed: a bucket bigger than any receiver's room
    may still move (it is often the densest one) and the receiver gives back some of its own buckets.
    Load metric only, within _CANDIDATE_WORK: the same two with the donors' exact covering choices and
    deficits filled by sets of buckets, then with greedy choices and sets (locally cheapest is not always
    globally cheapest: what a donor gives decides what the receivers still need), then each relaxed one
    with its overflowing bucket sent to the receivers with the most room instead of the least utilised."""
    budget = max(2, _CANDIDATE_WORK // max(1, len(model.metric))) if model.by_load else 2
    candidates: list[tuple[_State, int, str]] = []
    overflows: list[tuple[bool, bool, str, list[int], _State]] = []
    variants = [(False, False), (True, True), (False, True)] if model.by_load else [(False, False)]
    for exact, sets in variants:
        if len(candidates) + 2 > budget:
            break
        choice = "" if not model.by_load else (
            "; " + ("exact covering choices" if exact else "greedy covering choices")
            + (", deficits filled by sets of buckets" if sets else ", deficits filled bucket by bucket")
        )
        state, unplaced, _ = _solve(model, relaxed=False, exact=exact, sets=sets)
        candidates.append((state, unplaced, f"chose the plan{choice}" if candidates else ""))
        if not (model.by_load or _outside(model, state.level)):
            continue
        relaxed, relaxed_unplaced, overflowed = _solve(model, relaxed=True, exact=exact, sets=sets)
        passing = f"chose the plan where receivers pass part of their surplus on (cheaper{choice})"
        candidates.append((relaxed, relaxed_unplaced, passing))
        overflows.append((exact, sets, passing, overflowed, relaxed))
    for exact, sets, passing, overflowed, relaxed in overflows if model.by_load else []:
        for item, target in _overflow_alternatives(model, overflowed, relaxed):
            if len(candidates) >= budget:
                break
            candidate, candidate_unplaced, _ = _solve(
                model, relaxed=True, prefer={item: target}, exact=exact, sets=sets
            )
            candidates.append((
                candidate,
                candidate_unplaced,
                f"{passing}; bucket {model.bucket_ids[item]} is bigger than any receiver's room: sent to "
                f"{model.names[target]}, which passes the overflow on for fewer bytes",
            ))
    if len(candidates) == 1:
        return candidates[0]
    # The final plan's score first; on a tie the candidate state's own (before the threshold: a plan whose
    # needed move the threshold skips says so in the explanation), then the earlier candidate.
    scores = [(_score(model, state, threshold), _score(model, state, 0.0, final=False)) for state, _, _ in candidates]
    winner = min(range(len(candidates)), key=lambda position: (scores[position], position))
    return candidates[winner]


def _plan(model: _Model, settings: PlanSettings, drain: str | None) -> Plan:
    count = len(model.names)
    explanation: list[str] = []
    lower_bound = _lower_bound(model)
    metric_name = settings.metric
    explanation.append(
        f"balance by {metric_name}: total {model.total:.6g} over {sum(model.accepting)} accepting shard(s), "
        f"tolerance +-{settings.tolerance:.0%}, improvement_threshold {settings.improvement_threshold:g}"
        + (f", draining {drain}" if drain else "")
    )
    for shard in range(count):
        status = "in band"
        if model.level[shard] > model.hi[shard] + model.eps:
            status = "over its band"
        elif model.level[shard] < model.lo[shard] - model.eps:
            status = "under its band"
        explanation.append(
            f"{model.names[shard]}: {metric_name} {model.level[shard]:.6g}, share {model.share[shard]:.6g} "
            f"(band {model.lo[shard]:.6g}..{model.hi[shard]:.6g}), {status}"
        )

    state, unplaced, why = _best_candidate(model, settings.improvement_threshold)
    if why:
        explanation.append(why)
    if unplaced:
        explanation.append(f"{unplaced} selected bucket(s) fit on no receiver within its band and stay")

    kept, gains, skipped = _apply_threshold(model, _ordered(model, state), state.moves, settings.improvement_threshold)
    for item in skipped:
        explanation.append(
            f"skipped bucket {model.bucket_ids[item]} ({model.cost[item]:,} bytes) "
            f"{model.names[model.home[item]]} -> {model.names[state.moves[item]]}: its gain is below "
            f"improvement_threshold {settings.improvement_threshold:g} of its {metric_name}"
        )
    if settings.max_moves is not None and len(kept) > settings.max_moves:
        ranked = sorted(
            kept,
            key=lambda item: (
                model.accepting[model.home[item]], -gains[item], -model.cost[item], model.bucket_ids[item]
            ),
        )
        keep = set(ranked[: settings.max_moves])
        explanation.append(f"max_moves {settings.max_moves}: {len(kept) - len(keep)} move(s) left for a later run")
        kept = [item for item in kept if item in keep]

    targets = dict(state.moves)
    kept = _fit_capacity(model, kept, targets, explanation)
    kept.sort(key=lambda item: (-model.cost[item], model.bucket_ids[item]))
    waves_items = _waves(model, kept, targets)
    moves: list[Move] = []
    waves: list[list[int]] = []
    duration = 0.0
    for wave in waves_items:
        indexes = []
        for item in wave:
            indexes.append(len(moves))
            target = targets[item]
            moves.append(
                Move(
                    bucket=model.bucket_ids[item],
                    source=model.names[model.home[item]],
                    target=model.names[target],
                    bytes=model.cost[item],
                    reason=_reason(model, item, target),
                )
            )
        waves.append(indexes)
        duration += max(model.cost[item] for item in wave) / settings.throughput_bytes_per_s

    after = list(model.level)
    for item in kept:
        after[model.home[item]] -= model.metric[item]
        after[targets[item]] += model.metric[item]
    bytes_moved = sum(move.bytes for move in moves)
    out_of_band = [model.names[shard] for shard in range(count) if not model.in_band(shard, after[shard])]
    ratio = bytes_moved / lower_bound if lower_bound else (1.0 if bytes_moved == 0 else math.inf)
    explanation.append(
        f"plan: {len(moves)} move(s), {bytes_moved:,} bytes, lower bound {lower_bound:,} bytes "
        f"(ratio {ratio:.3f}), {len(waves)} wave(s), predicted {duration:.1f} s at "
        f"{settings.throughput_bytes_per_s:.3g} bytes/s per move"
    )
    explanation.append(
        "after: every shard within tolerance"
        if not out_of_band
        else f"after: still outside tolerance: {', '.join(out_of_band)} (buckets too coarse, threshold or max_moves)"
    )
    return Plan(
        moves=moves,
        bytes_moved=bytes_moved,
        lower_bound_bytes=lower_bound,
        before={model.names[shard]: model.level[shard] for shard in range(count)},
        after={model.names[shard]: after[shard] for shard in range(count)},
        predicted_duration_s=duration,
        explanation=explanation,
        waves=waves,
    )
