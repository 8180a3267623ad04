"""Shard planner: bytes moved against the lower bound and against a Citus-style greedy, plus speed and memory.

Generated, seeded cases (each over several fixed seeds):

* zipf: tenants with Zipf sizes hashed into 4,096 buckets, buckets in contiguous ranges over 8 shards
  (the hot tenants make some shards hot);
* add-shard: a balanced placement (largest bucket to the emptiest shard) over 8 shards, then a 9th empty shard;
* drain-shard: a balanced placement over 8 shards, then shard s3 is drained (`plan_drain`);
* weights: a balanced placement for equal weights, then the weights become 1,1,1,1,2,2,3,3;
* hot-growth: a balanced placement, then two shards' buckets grow 1.5-3x;
* load: balanced by load (Zipf, independent of the sizes), a move costs its bytes;
* threshold: the zipf case with improvement_threshold 0.5 (Citus's default for by_disk_size);
* many-shards: 16,384 buckets over 32 shards, Zipf tenants.

For each: the lower bound (max of the surpluses over and the deficits under the tolerance bands; for load,
in bytes by the exact covering knapsack per shard plus the pass-on term for buckets bigger than any
receiver's room, see `_lower_bound` in the planner), our plan's bytes and ratio to the bound, and a
faithful re-implementation of Citus's `rebalance_table_shards` greedy
(src/backend/distributed/operations/shard_rebalancer.c:
disallowed placements first, largest first, to the emptiest node; then FindAndMoveShardCost: the fullest
node gives its largest shard to the emptiest node while the move improves the balance, with `threshold`
bands around the average utilisation and `improvement_threshold`) on the same input in the same run.
Targets: ours / bound <= 1.05 on every case; ours <= greedy on every case and below it in aggregate.

Then speed: 65,536 buckets over 64 shards planned (target < 1 s), with peak memory (tracemalloc, a second run).

    .venv/bin/python benchmarks/shard_planner.py
    .venv/bin/python benchmarks/shard_planner.py --seeds 3 --enforce
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "functions"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from shards.planner import (  # noqa: E402
    BucketInfo,
    Plan,
    PlanSettings,
    ShardInfo,
    plan_drain,
    plan_rebalance,
)

RATIO_TARGET = 1.05
TIME_TARGET_S = 1.0


# --------------------------------------------------------------------------- Citus-style greedy


@dataclass
class GreedyResult:
    moves: list[tuple[int, str, str, int]]  # bucket, source, target, bytes
    bytes_moved: int
    after: dict[str, float]
    ignored_moves: int


def citus_greedy(
    buckets: Sequence[BucketInfo], shards: Sequence[ShardInfo], settings: PlanSettings, drain: str | None = None
) -> GreedyResult:
    """Citus's rebalancer, re-implemented from its description and source (not copied).

    Node capacity = weight; a shard's cost = its metric (bytes or load); utilisation = cost / capacity, a node
    of capacity 0 (not accepting) has infinite utilisation. Placements on nodes they are not allowed on
    (drained) move first, costliest first, each to the least utilised allowed node. Then, repeatedly:
    for each source from the most utilised (stop once a source is at or under the lower bound), for each
    target from the least utilised (stop once a target is at or over the upper bound, or when both are
    within the bounds), the source's shards costliest first: the first whose move leaves the target no more
    utilised than the source is moved; otherwise a move is accepted only if the target does not end above
    the source's old utilisation and the normalised improvement is at least improvement_threshold.
    """
    names = [shard.name for shard in shards]
    allowed = [shard.accepting and shard.name != drain for shard in shards]
    capacity = [shard.weight if ok else 0.0 for shard, ok in zip(shards, allowed, strict=True)]
    metric_of = (lambda b: float(b.load)) if settings.metric == "load" else (lambda b: float(b.bytes))
    index = {name: position for position, name in enumerate(names)}
    count = len(names)
    total_cost = [0.0] * count
    # per node: shard list sorted costliest first (ties: lower bucket id first)
    lists: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    size = {}
    cost_of = {}
    for bucket in buckets:
        node = index[bucket.shard]
        cost = metric_of(bucket)
        cost_of[bucket.bucket] = cost
        size[bucket.bucket] = bucket.bytes
        total_cost[node] += cost
        lists[node].append((-cost, bucket.bucket))
    for entries in lists:
        entries.sort()

    def utilization(node: int) -> float:
        return math.inf if capacity[node] <= 0 else total_cost[node] / capacity[node]

    def order_asc() -> list[int]:
        return sorted(range(count), key=lambda node: (utilization(node), -capacity[node], node))

    moves: list[tuple[int, str, str, int]] = []

    def move(bucket_id: int, source: int, target: int) -> None:
        cost = cost_of[bucket_id]
        lists[source].remove((-cost, bucket_id))
        bisect.insort(lists[target], (-cost, bucket_id))
        total_cost[source] -= cost
        total_cost[target] += cost
        moves.append((bucket_id, names[source], names[target], size[bucket_id]))

    # 1. disallowed placements, costliest first, to the emptiest allowed node
    disallowed = sorted(
        ((cost_of[bucket_id], bucket_id, node) for node in range(count) if not allowed[node]
         for _, bucket_id in lists[node]),
        key=lambda entry: (-entry[0], entry[1]),
    )
    for _, bucket_id, node in disallowed:
        target = next(candidate for candidate in order_asc() if allowed[candidate])
        move(bucket_id, node, target)

    total_capacity = sum(capacity)
    average = sum(total_cost) / total_capacity if total_capacity else 0.0
    lower, upper = (1 - settings.tolerance) * average, (1 + settings.tolerance) * average
    threshold = settings.improvement_threshold
    max_moves = settings.max_moves if settings.max_moves is not None else 1_000_000
    ignored = 0

    def find_and_move() -> bool:
        nonlocal ignored
        ascending = order_asc()
        for source in reversed(ascending):
            source_u = utilization(source)
            if source_u <= lower:
                return False
            for target in ascending:
                target_u = utilization(target)
                if target_u >= upper:
                    break
                if target_u >= lower and source_u <= upper:
                    break
                for negative_cost, bucket_id in lists[source]:
                    cost = -negative_cost
                    if not allowed[target]:
                        continue
                    new_target_u = (total_cost[target] + cost) / capacity[target]
                    new_source_u = (
                        math.inf if capacity[source] <= 0 else (total_cost[source] - cost) / capacity[source]
                    )
                    if new_target_u <= new_source_u:
                        move(bucket_id, source, target)
                        return True
                    if new_target_u > source_u:
                        continue
                    if new_target_u == source_u and new_source_u <= target_u:
                        continue
                    improvement = max(source_u - new_target_u, new_source_u - target_u)
                    added = min(new_target_u - target_u, source_u - new_source_u)
                    if added > 0 and improvement / added < threshold:
                        ignored += 1
                        continue
                    move(bucket_id, source, target)
                    return True
        return False

    while len(moves) < max_moves and find_and_move():
        pass
    return GreedyResult(
        moves=moves,
        bytes_moved=sum(entry[3] for entry in moves),
        after={names[node]: total_cost[node] for node in range(count)},
        ignored_moves=ignored,
    )


# --------------------------------------------------------------------------- generated cases


@dataclass(frozen=True)
class Case:
    name: str
    buckets: list[BucketInfo]
    shards: list[ShardInfo]
    settings: PlanSettings
    drain: str | None = None


def zipf_sizes(count: int, exponent: float, scale: float, rng: random.Random) -> list[float]:
    sizes = [scale / (rank**exponent) for rank in range(1, count + 1)]
    rng.shuffle(sizes)
    return sizes


def tenant_buckets(buckets: int, tenants: int, exponent: float, rng: random.Random) -> list[int]:
    """Per-bucket bytes: Zipf tenant sizes (a 10 GB top tenant) hashed into buckets, plus a small base.

    The exponent keeps the biggest tenant well under one shard's share (else no plan can balance)."""
    sizes = [rng.randint(1_000_000, 5_000_000) for _ in range(buckets)]
    for size in zipf_sizes(tenants, exponent, 10e9, rng):
        sizes[rng.randrange(buckets)] += int(size * rng.uniform(0.5, 1.5))
    return sizes


def contiguous(sizes: list[int], shard_count: int) -> list[BucketInfo]:
    return [
        BucketInfo(bucket, f"s{bucket * shard_count // len(sizes)}", size) for bucket, size in enumerate(sizes)
    ]


def balanced(sizes: list[int], shard_count: int, loads: list[float] | None = None) -> list[BucketInfo]:
    """Largest bucket to the emptiest shard (a placement that was balanced when it was made)."""
    level = [0] * shard_count
    placed = {}
    for bucket in sorted(range(len(sizes)), key=lambda bucket: (-sizes[bucket], bucket)):
        shard = min(range(shard_count), key=lambda node: (level[node], node))
        level[shard] += sizes[bucket]
        placed[bucket] = shard
    return [
        BucketInfo(bucket, f"s{placed[bucket]}", sizes[bucket], loads[bucket] if loads else 0.0)
        for bucket in range(len(sizes))
    ]


def shard_list(count: int, weights: Sequence[float] | None = None) -> list[ShardInfo]:
    return [ShardInfo(f"s{index}", weight=(weights[index] if weights else 1.0)) for index in range(count)]


def make_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    default = PlanSettings()
    sizes = tenant_buckets(4096, 100_000, 1.0, rng)
    cases.append(Case("zipf", contiguous(sizes, 8), shard_list(8), default))
    cases.append(Case("threshold", contiguous(sizes, 8), shard_list(8), replace(default, improvement_threshold=0.5)))

    sizes = tenant_buckets(4096, 100_000, 1.0, rng)
    placed = balanced(sizes, 8)
    cases.append(Case("add-shard", placed, shard_list(9), default))
    cases.append(Case("drain-shard", placed, shard_list(8), default, drain="s3"))
    cases.append(Case("weights", placed, shard_list(8, [1, 1, 1, 1, 2, 2, 3, 3]), default))

    hot = {"s1", "s5"}
    grown = [
        replace(bucket, bytes=int(bucket.bytes * rng.uniform(1.5, 3.0))) if bucket.shard in hot else bucket
        for bucket in placed
    ]
    cases.append(Case("hot-growth", grown, shard_list(8), default))

    sizes = [int(rng.lognormvariate(17, 1.0)) for _ in range(4096)]
    loads = zipf_sizes(4096, 0.8, 1000.0, rng)
    cases.append(
        Case("load", contiguous_loads(sizes, loads, 8), shard_list(8), replace(default, metric="load"))
    )

    sizes = tenant_buckets(16384, 200_000, 0.8, rng)
    cases.append(Case("many-shards", contiguous(sizes, 32), shard_list(32), default))
    return cases


def contiguous_loads(sizes: list[int], loads: list[float], shard_count: int) -> list[BucketInfo]:
    return [
        BucketInfo(bucket, f"s{bucket * shard_count // len(sizes)}", sizes[bucket], loads[bucket])
        for bucket in range(len(sizes))
    ]


def ours(case: Case) -> Plan:
    if case.drain:
        return plan_drain(case.buckets, case.shards, case.drain, case.settings)
    return plan_rebalance(case.buckets, case.shards, case.settings)


def in_band(after: dict[str, float], case: Case) -> bool:
    accepting = [shard for shard in case.shards if shard.accepting and shard.name != case.drain]
    total = sum(after.values())
    weights = sum(shard.weight for shard in accepting)
    epsilon = total * 1e-9
    for shard in case.shards:
        share = total * shard.weight / weights if shard in accepting else 0.0
        if abs(after[shard.name] - share) > case.settings.tolerance * share + epsilon:
            return False
    return True


# --------------------------------------------------------------------------- runs


@dataclass
class Row:
    case: str
    bound: int
    ours: int
    greedy: int
    worst_ratio: float
    ours_balanced: int
    greedy_balanced: int
    runs: int
    worse_than_greedy: int


def quality(seeds: Sequence[int]) -> list[Row]:
    rows: dict[str, Row] = {}
    for seed in seeds:
        for case in make_cases(seed):
            plan = ours(case)
            greedy = citus_greedy(case.buckets, case.shards, case.settings, case.drain)
            row = rows.setdefault(case.name, Row(case.name, 0, 0, 0, 0.0, 0, 0, 0, 0))
            row.bound += plan.lower_bound_bytes
            row.ours += plan.bytes_moved
            row.greedy += greedy.bytes_moved
            row.runs += 1
            ratio = plan.bytes_moved / plan.lower_bound_bytes if plan.lower_bound_bytes else 1.0
            row.worst_ratio = max(row.worst_ratio, ratio)
            row.ours_balanced += in_band(plan.after, case)
            row.greedy_balanced += in_band(greedy.after, case)
            row.worse_than_greedy += plan.bytes_moved > greedy.bytes_moved
    return list(rows.values())


def speed(buckets: int, shards: int, repeats: int) -> dict[str, float]:
    """Wall and CPU time of plan_rebalance (median, slowest), peak traced memory, the greedy's time."""
    rng = random.Random(65536)
    sizes = tenant_buckets(buckets, buckets * 4, 0.7, rng)
    case_buckets = contiguous(sizes, shards)
    case_shards = shard_list(shards)
    settings = PlanSettings()
    walls, cpus = [], []
    plan_rebalance(case_buckets, case_shards, settings)  # warm-up
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        plan_rebalance(case_buckets, case_shards, settings)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tracemalloc.start()
    plan_rebalance(case_buckets, case_shards, settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    wall, cpu = time.perf_counter(), time.process_time()
    citus_greedy(case_buckets, case_shards, settings)
    greedy_wall, greedy_cpu = time.perf_counter() - wall, time.process_time() - cpu
    walls.sort()
    cpus.sort()
    return {
        "wall_median": walls[len(walls) // 2], "wall_max": walls[-1],
        "cpu_median": cpus[len(cpus) // 2], "cpu_max": cpus[-1],
        "peak": float(peak), "greedy_wall": greedy_wall, "greedy_cpu": greedy_cpu,
    }


def fmt_bytes(value: float) -> str:
    return f"{value / 1e9:,.2f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--enforce", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    rows = quality(range(1, args.seeds + 1))
    print(f"\nquality over seeds 1..{args.seeds} (sums over the seeds; worst = the worst single run)\n")
    print("| case | lower bound | ours | ours / bound (worst) | Citus-style greedy | greedy / bound | "
          "ours / greedy | in band: ours, greedy | runs ours > greedy |")
    print("|---|---|---|---|---|---|---|---|---|")
    failures: list[str] = []
    total = Row("all", 0, 0, 0, 0.0, 0, 0, 0, 0)
    for row in rows:
        bound = row.bound or 1
        print(
            f"| {row.case} | {fmt_bytes(row.bound)} | {fmt_bytes(row.ours)} | {row.ours / bound:.4f} "
            f"({row.worst_ratio:.4f}) | {fmt_bytes(row.greedy)} | {row.greedy / bound:.3f} | "
            f"{row.ours / max(row.greedy, 1):.3f} | {row.ours_balanced}/{row.runs}, {row.greedy_balanced}/{row.runs} "
            f"| {row.worse_than_greedy} |"
        )
        total.bound += row.bound
        total.ours += row.ours
        total.greedy += row.greedy
        total.runs += row.runs
        total.ours_balanced += row.ours_balanced
        total.greedy_balanced += row.greedy_balanced
        total.worse_than_greedy += row.worse_than_greedy
        total.worst_ratio = max(total.worst_ratio, row.worst_ratio)
        if row.worst_ratio > RATIO_TARGET:
            failures.append(f"{row.case}: worst ratio {row.worst_ratio:.4f} > {RATIO_TARGET}")
        if row.worse_than_greedy:
            failures.append(f"{row.case}: {row.worse_than_greedy} run(s) move more bytes than the greedy")
    print(
        f"| **all** | {fmt_bytes(total.bound)} | {fmt_bytes(total.ours)} | {total.ours / (total.bound or 1):.4f} "
        f"({total.worst_ratio:.4f}) | {fmt_bytes(total.greedy)} | {total.greedy / (total.bound or 1):.3f} | "
        f"{total.ours / max(total.greedy, 1):.3f} | {total.ours_balanced}/{total.runs}, "
        f"{total.greedy_balanced}/{total.runs} | {total.worse_than_greedy} |"
    )
    if total.ours >= total.greedy:
        failures.append("aggregate: ours is not below the greedy")

    measured = speed(65_536, 64, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nspeed: 65,536 buckets over 64 shards (Zipf tenants, contiguous ranges); load average {load:.1f}\n")
    print("| measure | wall | CPU |")
    print("|---|---|---|")
    print(f"| plan_rebalance, median of {args.repeats} | {measured['wall_median'] * 1000:.0f} ms "
          f"| {measured['cpu_median'] * 1000:.0f} ms |")
    print(f"| plan_rebalance, slowest | {measured['wall_max'] * 1000:.0f} ms | {measured['cpu_max'] * 1000:.0f} ms |")
    print(f"| Citus-style greedy, same input | {measured['greedy_wall'] * 1000:.0f} ms "
          f"| {measured['greedy_cpu'] * 1000:.0f} ms |")
    print(f"| peak traced memory of one plan (tracemalloc) | {measured['peak'] / 1e6:.1f} MB | |")
    if measured["cpu_median"] > TIME_TARGET_S:
        failures.append(f"speed: median CPU time {measured['cpu_median']:.2f} s > {TIME_TARGET_S} s")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures and args.enforce else 0


if __name__ == "__main__":
    sys.exit(main())

