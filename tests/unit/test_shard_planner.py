"""Shard planner: invariants under generated input (hypothesis), impossible input, threshold and drains."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from benchmarks.shard_planner import citus_greedy, in_band, make_cases, ours
from shards.planner import (
    BucketInfo,
    Move,
    Plan,
    PlanSettings,
    ShardInfo,
    _cover_search,
    plan_drain,
    plan_rebalance,
)

# --------------------------------------------------------------------------- generated problems


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[BucketInfo], list[ShardInfo], PlanSettings]:
    """Any shape: heavy-tailed bucket sizes, skewed homes, weights, caps, bytes or load."""
    shard_count = draw(st.integers(min_value=1, max_value=7))
    shards = [
        ShardInfo(
            f"s{index}",
            weight=draw(st.sampled_from([1.0, 1.0, 2.0, 0.5, 3.0])),
            max_concurrent_moves=draw(st.integers(min_value=1, max_value=3)),
        )
        for index in range(shard_count)
    ]
    bucket_count = draw(st.integers(min_value=0, max_value=120))
    skew = draw(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=shard_count, max_size=shard_count))
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    buckets = []
    for bucket in range(bucket_count):
        home = rng.randrange(shard_count)
        size = int(rng.paretovariate(1.3) * 10_000_000 * (1 + skew[home]))
        buckets.append(BucketInfo(bucket * 7 + 3, f"s{home}", size, load=rng.random() * (1 + skew[home])))
    plan_settings = PlanSettings(
        tolerance=draw(st.sampled_from([0.05, 0.1, 0.2])),
        metric=draw(st.sampled_from(["bytes", "bytes", "load"])),
    )
    return buckets, shards, plan_settings


@st.composite
def fine_grained(draw: st.DrawFn) -> tuple[list[BucketInfo], list[ShardInfo], PlanSettings]:
    """Many small buckets (each at most half of the narrowest band) on skewed homes: balance is reachable."""
    shard_count = draw(st.integers(min_value=2, max_value=6))
    shards = [ShardInfo(f"s{i}", weight=draw(st.sampled_from([1.0, 2.0]))) for i in range(shard_count)]
    homes = draw(st.lists(st.integers(min_value=1, max_value=20), min_size=shard_count, max_size=shard_count))
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    buckets = [
        BucketInfo(bucket, rng.choices([shard.name for shard in shards], weights=homes)[0], rng.randint(0, 100))
        for bucket in range(draw(st.integers(min_value=600, max_value=1500)))
    ]
    return buckets, shards, PlanSettings(tolerance=draw(st.sampled_from([0.1, 0.2])))


def metric_of(bucket: BucketInfo, plan_settings: PlanSettings) -> float:
    return bucket.load if plan_settings.metric == "load" else float(bucket.bytes)


def check_plan_consistency(buckets: list[BucketInfo], shards: list[ShardInfo], cfg: PlanSettings, plan: Plan) -> None:
    by_id = {bucket.bucket: bucket for bucket in buckets}
    names = {shard.name: shard for shard in shards}
    moved = Counter(move.bucket for move in plan.moves)
    assert all(count == 1 for count in moved.values()), "a bucket is moved twice"
    levels = {shard.name: 0.0 for shard in shards}
    for bucket in buckets:
        levels[bucket.shard] += metric_of(bucket, cfg)
    assert plan.before == pytest.approx(levels)
    for move in plan.moves:
        bucket = by_id[move.bucket]
        assert move.source == bucket.shard
        assert move.target != move.source
        assert move.bytes == bucket.bytes
        assert move.reason
        levels[move.source] -= metric_of(bucket, cfg)
        levels[move.target] += metric_of(bucket, cfg)
    assert plan.after == pytest.approx(levels, abs=1e-6)
    assert plan.bytes_moved == sum(move.bytes for move in plan.moves)
    # waves: a partition of the moves, each within every shard's concurrency cap
    flat = sorted(index for wave in plan.waves for index in wave)
    assert flat == list(range(len(plan.moves)))
    for wave in plan.waves:
        usage: Counter[str] = Counter()
        for index in wave:
            usage[plan.moves[index].source] += 1
            usage[plan.moves[index].target] += 1
        assert all(usage[name] <= names[name].max_concurrent_moves for name in usage)
    expected = sum(max(plan.moves[i].bytes for i in wave) for wave in plan.waves) / cfg.throughput_bytes_per_s
    assert plan.predicted_duration_s == pytest.approx(expected)
    assert json.loads(json.dumps(plan.to_dict()))["bytes_moved"] == plan.bytes_moved


def within_tolerance(shards: list[ShardInfo], cfg: PlanSettings, after: dict[str, float], drained: str = "") -> bool:
    accepting = [shard for shard in shards if shard.accepting and shard.name != drained]
    total = sum(after.values())
    weights = sum(shard.weight for shard in accepting)
    for shard in shards:
        share = total * shard.weight / weights if shard in accepting else 0.0
        if abs(after[shard.name] - share) > cfg.tolerance * share + max(total, 1.0) * 1e-9:
            return False
    return True


# --------------------------------------------------------------------------- properties


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_plans_are_consistent_deterministic_and_never_under_the_bound(problem) -> None:
    buckets, shards, cfg = problem
    plan = plan_rebalance(buckets, shards, cfg)
    check_plan_consistency(buckets, shards, cfg, plan)
    assert plan.to_dict() == plan_rebalance(list(buckets), list(shards), cfg).to_dict()
    shuffled = list(buckets)
    random.Random(7).shuffle(shuffled)
    assert plan.to_dict() == plan_rebalance(shuffled, shards, cfg).to_dict()
    if within_tolerance(shards, cfg, plan.after):
        # the lower bound holds for every plan that ends in band, ours included
        assert plan.bytes_moved >= plan.lower_bound_bytes
    if within_tolerance(shards, cfg, plan.before):
        assert plan.moves == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(fine_grained())
def test_small_buckets_always_end_within_tolerance(problem) -> None:
    """When every bucket is small next to every band, a balanced placement exists: the plan reaches it."""
    buckets, shards, cfg = problem
    total = sum(bucket.bytes for bucket in buckets)
    weights = sum(shard.weight for shard in shards)
    smallest_band = min(total * shard.weight / weights for shard in shards) * cfg.tolerance
    assume(buckets and max(bucket.bytes for bucket in buckets) <= smallest_band / 2)
    plan = plan_rebalance(buckets, shards, cfg)
    check_plan_consistency(buckets, shards, cfg, plan)
    assert within_tolerance(shards, cfg, plan.after), plan.explanation
    assert plan.bytes_moved >= plan.lower_bound_bytes
    assert "every shard within tolerance" in plan.explanation[-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.data())
def test_drain_empties_the_shard(problem, data) -> None:
    buckets, shards, cfg = problem
    assume(len(shards) >= 2)
    drain = data.draw(st.sampled_from([shard.name for shard in shards]))
    plan = plan_drain(buckets, shards, drain, cfg)
    check_plan_consistency(buckets, shards, cfg, plan)
    on_drain = {bucket.bucket for bucket in buckets if bucket.shard == drain}
    assert {move.bucket for move in plan.moves if move.source == drain} == on_drain
    assert all(move.target != drain for move in plan.moves)
    assert plan.after[drain] == pytest.approx(0.0, abs=1e-9)
    assert all(move.reason.startswith("drain:") for move in plan.moves if move.source == drain)


@settings(max_examples=40, deadline=None)
@given(problems(), st.integers(min_value=0, max_value=5))
def test_max_moves_caps_the_plan(problem, cap) -> None:
    buckets, shards, cfg = problem
    capped = PlanSettings(tolerance=cfg.tolerance, metric=cfg.metric, max_moves=cap)
    plan = plan_rebalance(buckets, shards, capped)
    check_plan_consistency(buckets, shards, capped, plan)
    assert len(plan.moves) <= cap


# --------------------------------------------------------------------------- examples


def test_hot_shard_gives_just_its_surplus_to_the_cold_one() -> None:
    buckets = [BucketInfo(b, "a", 10) for b in range(30)] + [BucketInfo(100 + b, "b", 10) for b in range(10)]
    plan = plan_rebalance(buckets, [ShardInfo("a"), ShardInfo("b")], PlanSettings(tolerance=0.0))
    assert plan.after == {"a": 200.0, "b": 200.0}
    assert plan.bytes_moved == plan.lower_bound_bytes == 100
    assert {(move.source, move.target) for move in plan.moves} == {("a", "b")}
    assert "surplus: a at 150.0% of its share" in plan.moves[0].reason
    assert "under its band" in plan.moves[0].reason


def test_smallest_overshoot_beats_largest_first() -> None:
    """Citus's greedy moves the largest bucket that improves the balance; we move just the surplus."""
    sizes = {1: 500, 2: 300, 3: 200, 4: 100}
    buckets = [BucketInfo(bucket, "a", size) for bucket, size in sizes.items()] + [BucketInfo(5, "b", 700)]
    shards = [ShardInfo("a"), ShardInfo("b")]
    cfg = PlanSettings(tolerance=0.02)  # share 900, band 882..918: a must give 182..218
    plan = plan_rebalance(buckets, shards, cfg)
    assert [move.bucket for move in plan.moves] == [3]
    assert plan.after == {"a": 900.0, "b": 900.0}
    greedy = citus_greedy(buckets, shards, cfg)
    assert greedy.moves == [(2, "a", "b", 300)]  # then b is over its band and nothing improves: it stops
    assert greedy.after == {"a": 800.0, "b": 1000.0}


def test_weights_give_the_bigger_shard_a_bigger_share() -> None:
    buckets = [BucketInfo(b, "small" if b % 2 else "big", 100) for b in range(60)]
    plan = plan_rebalance(buckets, [ShardInfo("small"), ShardInfo("big", weight=2.0)], PlanSettings(tolerance=0.05))
    assert plan.after["big"] == pytest.approx(4000, rel=0.05)
    assert plan.after["small"] == pytest.approx(2000, rel=0.05)


def test_improvement_threshold_skips_a_terabyte_move_that_wins_ten_gigabytes() -> None:
    tb = 1_000_000_000_000
    buckets = [BucketInfo(1, "a", tb), BucketInfo(2, "a", tb), BucketInfo(3, "b", 990_000_000_000)]
    shards = [ShardInfo("a"), ShardInfo("b")]
    eager = plan_rebalance(buckets, shards, PlanSettings(tolerance=0.0))
    assert [move.bytes for move in eager.moves] == [tb]  # wins 20 GB of imbalance (10 GB on each side)
    careful = plan_rebalance(buckets, shards, PlanSettings(tolerance=0.0, improvement_threshold=0.5))
    assert careful.moves == []
    assert any("improvement_threshold 0.5" in line and "skipped bucket" in line for line in careful.explanation)


def test_adding_a_shard_moves_its_share_and_no_more() -> None:
    buckets = [BucketInfo(b, f"s{b % 4}", 1_000) for b in range(400)]
    shards = [ShardInfo(f"s{i}") for i in range(5)]
    plan = plan_rebalance(buckets, shards, PlanSettings())
    assert all(move.target == "s4" for move in plan.moves)
    assert plan.after["s4"] >= 0.9 * 80_000
    assert plan.bytes_moved == plan.lower_bound_bytes == 72_000  # 90 % of the new shard's share


def test_non_accepting_shard_is_drained_by_rebalance_and_not_refilled() -> None:
    buckets = [BucketInfo(b, f"s{b % 3}", 10) for b in range(30)]
    shards = [ShardInfo("s0"), ShardInfo("s1"), ShardInfo("s2", accepting=False)]
    plan = plan_rebalance(buckets, shards, PlanSettings())
    assert plan.after["s2"] == 0
    assert all(move.source == "s2" and move.target in {"s0", "s1"} for move in plan.moves)


def test_waves_spread_moves_over_distinct_shards_first() -> None:
    buckets = [BucketInfo(b, "hot1" if b < 20 else "hot2", 10) for b in range(40)]
    shards = [ShardInfo("hot1"), ShardInfo("hot2"), ShardInfo("cold1"), ShardInfo("cold2")]
    plan = plan_rebalance(buckets, shards, PlanSettings(tolerance=0.0))
    first = [plan.moves[i] for i in plan.waves[0]]
    assert len(first) == 2
    assert len({move.source for move in first} | {move.target for move in first}) == 4
    assert plan.predicted_duration_s == pytest.approx(len(plan.waves) * 10 / 50e6)


def test_undo_moves_the_bucket_back() -> None:
    move = Move(bucket=7, source="a", target="b", bytes=100, reason="surplus")
    back = move.undo()
    assert (back.bucket, back.source, back.target, back.bytes) == (7, "b", "a", 100)
    assert back.undo().source == "a"
    assert plan_rebalance([BucketInfo(1, "a", 5)], [ShardInfo("a")], PlanSettings()).to_dict()["moves"] == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plan_rebalance([], [ShardInfo("a", accepting=False)], PlanSettings()), "no shard accepts"),
        (lambda: plan_rebalance([], [], PlanSettings()), "at least one shard"),
        (lambda: plan_drain([], [ShardInfo("a"), ShardInfo("b")], "c", PlanSettings()), "drain: unknown shard 'c'"),
        (lambda: plan_drain([], [ShardInfo("a")], "a", PlanSettings()), "last shard"),
        (
            lambda: plan_drain([], [ShardInfo("a"), ShardInfo("b", accepting=False)], "a", PlanSettings()),
            "last shard",
        ),
        (
            lambda: plan_rebalance([BucketInfo(1, "a", 1), BucketInfo(1, "a", 2)], [ShardInfo("a")], PlanSettings()),
            r"buckets\[1\].bucket: duplicate bucket 1",
        ),
        (lambda: plan_rebalance([BucketInfo(1, "a", -1)], [ShardInfo("a")], PlanSettings()), r"buckets\[0\].bytes"),
        (lambda: plan_rebalance([BucketInfo(1, "a", 1, -0.5)], [ShardInfo("a")], PlanSettings()), r"\.load"),
        (lambda: plan_rebalance([BucketInfo(1, "a", 1, math.nan)], [ShardInfo("a")], PlanSettings()), r"\.load"),
        (lambda: plan_rebalance([BucketInfo(1, "z", 1)], [ShardInfo("a")], PlanSettings()), "unknown shard 'z'"),
        (lambda: plan_rebalance([], [ShardInfo("a"), ShardInfo("a")], PlanSettings()), "duplicate shard 'a'"),
        (lambda: plan_rebalance([], [ShardInfo("a", weight=0)], PlanSettings()), r"shards\[0\].weight"),
        (lambda: plan_rebalance([], [ShardInfo("a", max_concurrent_moves=0)], PlanSettings()), "max_concurrent"),
        (lambda: plan_rebalance([], [ShardInfo("a")], PlanSettings(tolerance=-0.1)), "settings.tolerance"),
        (lambda: plan_rebalance([], [ShardInfo("a")], PlanSettings(max_moves=-1)), "settings.max_moves"),
        (lambda: plan_rebalance([], [ShardInfo("a")], PlanSettings(metric="rows")), "settings.metric"),  # type: ignore[arg-type]
        (
            lambda: plan_rebalance([], [ShardInfo("a")], PlanSettings(throughput_bytes_per_s=0)),
            "settings.throughput_bytes_per_s",
        ),
    ],
)
def test_impossible_input_is_refused_with_the_field(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_generated_benchmark_cases_beat_the_citus_greedy_and_stay_near_the_bound() -> None:
    """One seed of the benchmark's cases (the benchmark runs five; the 16k-bucket one is left to it)."""
    for case in make_cases(1):
        if case.name == "many-shards":
            continue
        plan = ours(case)
        greedy = citus_greedy(case.buckets, case.shards, case.settings, case.drain)
        assert in_band(plan.after, case), case.name
        assert plan.bytes_moved <= greedy.bytes_moved, case.name
        if case.settings.metric == "bytes":
            assert plan.bytes_moved <= 1.05 * plan.lower_bound_bytes, case.name


def test_load_case_meets_the_target_against_the_exact_covering_bound() -> None:
    """Load, seed 1: the exact covering knapsack and the pass-on term make the bound tight (ratio 1.0000;
    it was 1.36 against the fractional bound), the plan never worse than the greedy."""
    case = next(case for case in make_cases(1) if case.name == "load")
    plan = ours(case)
    greedy = citus_greedy(case.buckets, case.shards, case.settings, case.drain)
    assert in_band(plan.after, case)
    assert plan.bytes_moved <= greedy.bytes_moved
    assert plan.lower_bound_bytes <= plan.bytes_moved <= 1.0001 * plan.lower_bound_bytes


def test_load_case_seed_4_stays_at_its_honest_figure() -> None:
    """Load, seed 4: the worst seed, 1.082 x the bound (173.3 MB against 160.2 MB; a search restricted to
    the plan's structure finds nothing under 172.7 MB, so most of the gap is the bound's, which does not see
    that a receiver's deficit must be met by whole buckets). Pinned so that it does not get worse."""
    case = next(case for case in make_cases(4) if case.name == "load")
    plan = ours(case)
    assert in_band(plan.after, case)
    assert plan.lower_bound_bytes >= 160_000_000
    assert plan.bytes_moved <= 1.083 * plan.lower_bound_bytes


def test_exact_covering_search_matches_brute_force() -> None:
    """_cover_search: the cheapest subset with metric in [need, cap], checked against every subset."""
    rng = random.Random(11)
    for _ in range(300):
        count = rng.randint(0, 9)
        metric = [rng.choice([0.5, 1.0, 2.0, 3.5]) * rng.paretovariate(1.2) for _ in range(count)]
        cost = [float(rng.randint(1, 100)) for _ in range(count)]
        order = sorted(range(count), key=lambda item: (-metric[item] / cost[item], item))
        metric, cost = [metric[item] for item in order], [cost[item] for item in order]
        need = rng.uniform(0.0, sum(metric) * 1.1)
        cap = rng.choice([math.inf, need * rng.uniform(1.0, 2.0)])
        brute = math.inf
        for mask in range(1 << count):
            carried = sum(metric[item] for item in range(count) if mask >> item & 1)
            if need <= carried <= cap:
                brute = min(brute, sum(cost[item] for item in range(count) if mask >> item & 1))
        found = _cover_search(metric, cost, need, cap, 1_000_000)
        assert found is not None
        spent, taken = found
        assert spent == pytest.approx(brute) if math.isfinite(brute) else spent == math.inf
        if taken:
            assert need <= sum(metric[item] for item in taken) <= cap
            assert sum(cost[item] for item in taken) == pytest.approx(spent)


def test_load_lower_bound_never_exceeds_the_true_optimum_on_tiny_instances() -> None:
    """Every placement of up to 7 buckets over up to 3 shards: the bound (exact covering knapsacks and the
    pass-on term) is never above the cheapest placement that ends in band."""
    checked = 0
    for seed in range(250):
        rng = random.Random(seed)
        shard_count = rng.randint(2, 3)
        shards = [ShardInfo(f"s{index}", weight=rng.choice([1.0, 1.0, 2.0])) for index in range(shard_count)]
        buckets = [
            BucketInfo(
                bucket,
                f"s{rng.choices(range(shard_count), weights=[6, *([1] * (shard_count - 1))])[0]}",
                rng.randint(1, 100),
                rng.paretovariate(1.2),
            )
            for bucket in range(rng.randint(3, 7))
        ]
        cfg = PlanSettings(tolerance=rng.choice([0.1, 0.2, 0.3]), metric="load")
        bound = plan_rebalance(buckets, shards, cfg).lower_bound_bytes
        optimum = math.inf
        for placement in itertools.product(range(shard_count), repeat=len(buckets)):
            levels = [0.0] * shard_count
            for bucket, shard in zip(buckets, placement, strict=True):
                levels[shard] += bucket.load
            after = {f"s{shard}": levels[shard] for shard in range(shard_count)}
            if within_tolerance(shards, cfg, after):
                moved = sum(b.bytes for b, shard in zip(buckets, placement, strict=True) if b.shard != f"s{shard}")
                optimum = min(optimum, moved)
        if math.isfinite(optimum):
            checked += 1
            assert bound <= optimum, seed
    assert checked > 100
