"""The CloudFront path planner: coverage, limits, budget, cost, validation; properties with hypothesis."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invalidator.cdn_path_planner import (
    OverInvalidationBudget,
    PlanInputError,
    PlannerConfig,
    plan_invalidation,
)


def covered(plan, path: str) -> bool:
    prefixes = tuple(w[:-1] for w in plan.requested_wildcards + plan.wildcards)
    return path in set(plan.paths) or path.startswith(prefixes)


def site(spec: dict[str, int]) -> list[str]:
    """{"/a/b/": 3} -> ["/a/b/f0", "/a/b/f1", "/a/b/f2"]"""
    return [f"{d}f{i}" for d, n in spec.items() for i in range(n)]


# --------------------------------------------------------------------------- choices


def test_a_fully_changed_directory_becomes_one_wildcard():
    inventory = site({"/docs/guide/": 50, "/docs/api/": 20, "/blog/": 10})
    changed = [p for p in inventory if p.startswith("/docs/guide/")] + ["/blog/f3"]
    plan = plan_invalidation(changed, inventory=inventory)
    assert plan.wildcards == ("/docs/guide/*",)
    assert sorted(plan.paths) == ["/blog/f3", "/docs/guide/*"]
    assert plan.billed_paths == 2 and plan.over_invalidated == 0 and plan.exact_search


def test_the_budget_keeps_unchanged_objects_out_of_wildcards():
    inventory = site({"/docs/": 10})
    changed = inventory[:9]  # one unchanged object under /docs/
    strict = plan_invalidation(changed, inventory=inventory)  # default budget: 0 objects
    assert strict.wildcards == () and strict.billed_paths == 9 and strict.over_invalidated == 0
    loose = plan_invalidation(changed, inventory=inventory,
                              config=PlannerConfig(budget=OverInvalidationBudget(max_objects=1)))
    assert loose.wildcards == ("/docs/*",) and loose.over_invalidated == 1 and loose.billed_paths == 1


def test_ratio_budget_is_a_share_of_the_unchanged_objects():
    inventory = site({"/a/": 100, "/b/": 100})
    changed = inventory[:95]  # /a/ has 5 unchanged; 105 unchanged in all
    cfg = PlannerConfig(budget=OverInvalidationBudget(max_objects=None, max_ratio=0.04))  # 4 objects
    assert plan_invalidation(changed, inventory=inventory, config=cfg).wildcards == ()
    cfg = PlannerConfig(budget=OverInvalidationBudget(max_objects=None, max_ratio=0.05))  # 5 objects
    plan = plan_invalidation(changed, inventory=inventory, config=cfg)
    assert plan.wildcards == ("/a/*",) and plan.over_invalidated == 5 and plan.over_budget == 5


def test_both_budget_limits_apply():
    budget = OverInvalidationBudget(max_objects=3, max_ratio=0.5)
    assert budget.limit(100) == 3 and budget.limit(4) == 2
    assert OverInvalidationBudget(max_objects=None, max_ratio=None).limit(10) is None


def test_a_deeper_directory_is_preferred_when_it_holds_every_change():
    inventory = site({"/a/": 5, "/a/b/": 1, "/a/b/c/": 10})
    changed = [p for p in inventory if p.startswith("/a/b/c/")]
    plan = plan_invalidation(changed, inventory=inventory,
                             config=PlannerConfig(budget=OverInvalidationBudget(max_objects=None)))
    assert plan.wildcards == ("/a/b/c/*",) and plan.over_invalidated == 0


def test_exchange_rate_refuses_wildcards_that_purge_much_to_save_little():
    inventory = site({"/a/": 500})
    changed = inventory[:3]
    unlimited = PlannerConfig(budget=OverInvalidationBudget(max_objects=None))
    assert plan_invalidation(changed, inventory=inventory, config=unlimited).wildcards == ("/a/*",)
    careful = PlannerConfig(budget=OverInvalidationBudget(max_objects=None), max_over_per_saved_path=100)
    assert plan_invalidation(changed, inventory=inventory, config=careful).wildcards == ()


def test_no_inventory_means_exact_paths_only():
    changed = site({"/a/": 20, "/b/c/": 30})
    plan = plan_invalidation(changed)
    assert plan.wildcards == () and plan.billed_paths == 50 and plan.over_invalidated == 0
    assert plan.inventory_objects is None


def test_without_inventory_wildcards_only_under_allowed_prefixes():
    changed = site({"/assets/v2/": 20, "/pages/": 30})
    cfg = PlannerConfig(wildcard_prefixes_without_inventory=("/assets/",))
    plan = plan_invalidation(changed, config=cfg)
    assert plan.wildcards == ("/assets/v2/*",)  # the deepest directory holding all of the changes
    assert plan.billed_paths == 31
    assert plan.over_invalidated is None  # unknown without an inventory


def test_wildcards_in_flight_reduce_what_may_be_used():
    changed = site({f"/d{i}/": 3 for i in range(20)})
    inventory = [*changed, "/index.html"]  # unchanged: rules out "/*" with the default budget of 0
    plan = plan_invalidation(changed, inventory=inventory)
    assert len(plan.wildcards) == 15 and plan.billed_paths == 15 + 5 * 3
    plan = plan_invalidation(changed, inventory=inventory, wildcards_in_flight=12)
    assert len(plan.wildcards) == 3 and plan.billed_paths == 3 + 17 * 3
    plan = plan_invalidation(changed, inventory=inventory, wildcards_in_flight=15)
    assert plan.wildcards == () and plan.billed_paths == 60


def test_one_root_wildcard_when_everything_changed():
    inventory = site({f"/d{i}/": 3 for i in range(20)})
    plan = plan_invalidation(inventory, inventory=inventory, wildcards_in_flight=14)
    assert plan.wildcards == ("/*",) and plan.billed_paths == 1


def test_requested_wildcards_are_sent_as_given_and_cover_their_paths():
    inventory = site({"/img/": 10, "/css/": 4})
    plan = plan_invalidation(["/img/f1", "/css/f1"], inventory=inventory, requested_wildcards=["/img/*"])
    assert plan.requested_wildcards == ("/img/*",)
    assert set(plan.paths) == {"/img/*", "/css/f1"}
    assert plan.over_invalidated == 9  # reported, not budgeted
    with pytest.raises(PlanInputError) as err:
        plan_invalidation(["/a"], requested_wildcards=["/img/*/x*"])
    assert err.value.field == "wildcards[0]"
    with pytest.raises(PlanInputError) as err:
        plan_invalidation(["/a"], requested_wildcards=[f"/w{i}/*" for i in range(5)], wildcards_in_flight=11)
    assert err.value.field == "wildcards"


# --------------------------------------------------------------------------- batches and cost


def test_batches_never_exceed_the_cloudfront_limit():
    changed = [f"/p/{i}" for i in range(7001)]
    plan = plan_invalidation(changed)
    assert [len(b) for b in plan.batches] == [3000, 3000, 1001]
    small = plan_invalidation(changed, config=PlannerConfig(max_paths_per_batch=1000))
    assert len(small.batches) == 8 and max(len(b) for b in small.batches) == 1000
    assert sorted(small.paths) == sorted(changed)


def test_wildcards_go_in_the_first_batch():
    inventory = site({"/a/": 10}) + [f"/z/{i}" for i in range(5000)]
    changed = site({"/a/": 10}) + [f"/z/{i}" for i in range(0, 5000, 2)]
    plan = plan_invalidation(changed, inventory=inventory)
    assert plan.batches[0][0] == "/a/*"


def test_cost_uses_the_free_allowance_and_the_price_given():
    changed = [f"/p/{i}" for i in range(1200)]
    assert plan_invalidation(changed).estimated_cost_usd == Decimal("1.000")  # 200 x $0.005
    assert plan_invalidation(changed, paths_billed_this_month=1000).estimated_cost_usd == Decimal("6.000")
    assert plan_invalidation(changed, paths_billed_this_month=900).estimated_cost_usd == Decimal("5.500")
    cfg = PlannerConfig(price_per_path=Decimal("0.01"), free_paths_per_month=0)
    assert plan_invalidation(changed, config=cfg).estimated_cost_usd == Decimal("12.000")


def test_more_paths_than_allowed_is_refused():
    with pytest.raises(PlanInputError) as err:
        plan_invalidation([f"/p/{i}" for i in range(101)], config=PlannerConfig(max_total_paths=100))
    assert err.value.field == "paths"


def test_audit_summary_lists_wildcards_cost_and_a_sample():
    scattered = [f"/x/{i}/o" for i in range(200)]
    inventory = [*site({"/a/": 10}), *scattered]
    plan = plan_invalidation(inventory[:10] + scattered[::2], inventory=inventory)
    audit = plan.as_audit(max_listed=5)
    assert audit["wildcards"] == ["/a/*"] and audit["billed_paths"] == 101
    assert audit["estimated_cost_usd"] == "0.000" and audit["paths_truncated"] is True
    assert len(audit["paths_sample"]) == 5 and audit["changed_objects"] == 110


# --------------------------------------------------------------------------- cache tags


def test_cache_tag_items_pass_through_when_enabled():
    cfg = PlannerConfig(cache_tags_enabled=True)
    plan = plan_invalidation(["#product-42", "/p/1", "#product-42"], config=cfg)
    assert plan.tag_items == 1 and set(plan.paths) == {"#product-42", "/p/1"} and plan.billed_paths == 2
    with pytest.raises(PlanInputError) as err:
        plan_invalidation(["/p/1", "#product-42"])
    assert err.value.field == "paths[1]" and "not enabled" in str(err.value)
    with pytest.raises(PlanInputError):
        plan_invalidation(["# bad tag"], config=cfg)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("paths", "field", "words"), [
    ([], "paths", "empty"),
    ("/a", "paths", "list"),
    (["/a", "b/c"], "paths[1]", "start with '/'"),
    (["/a b"], "paths[0]", "whitespace"),
    (["/a\tb"], "paths[0]", "whitespace"),
    (["/a/*"], "paths[0]", "'*'"),
    (["/" + "x" * 4000], "paths[0]", "longer"),
    ([42], "paths[0]", "string"),
])
def test_bad_paths_are_refused_with_the_field_named(paths, field, words):
    with pytest.raises(PlanInputError) as err:
        plan_invalidation(paths)
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_paths_per_batch": 3001}, "max_paths_per_batch"),
    ({"max_wildcards": 16}, "max_wildcards"),
    ({"budget": OverInvalidationBudget(max_objects=-1)}, "budget.max_objects"),
    ({"budget": OverInvalidationBudget(max_ratio=1.5)}, "budget.max_ratio"),
    ({"wildcard_prefixes_without_inventory": ("/assets",)}, "wildcard_prefixes_without_inventory[0]"),
])
def test_bad_config_is_refused(kwargs, field):
    with pytest.raises(PlanInputError) as err:
        PlannerConfig(**kwargs)
    assert err.value.field == field


def test_inventory_entries_must_be_paths():
    with pytest.raises(PlanInputError) as err:
        plan_invalidation(["/a"], inventory=["/a", "b"])
    assert err.value.field == "inventory"


def test_plans_are_deterministic():
    inventory = site({f"/s{i % 7}/d{i}/": 1 + i % 5 for i in range(200)})
    changed = inventory[::3]
    cfg = PlannerConfig(budget=OverInvalidationBudget(max_objects=30), frontier_cap=4)
    first = plan_invalidation(changed, inventory=inventory, config=cfg)
    second = plan_invalidation(list(reversed(changed)), inventory=list(reversed(inventory)), config=cfg)
    assert first.paths == second.paths


# --------------------------------------------------------------------------- properties

segment = st.sampled_from(["a", "b", "c", "d"])
path_st = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def planning_case(draw):
    inventory = draw(st.lists(path_st, min_size=1, max_size=60, unique=True))
    # An object path cannot also be a directory of another object in a real site.
    inventory = [p for p in inventory if not any(q.startswith(p + "/") for q in inventory)]
    changed = draw(st.lists(st.sampled_from(inventory), min_size=1, max_size=len(inventory), unique=True))
    extra = draw(st.lists(path_st.map(lambda p: p + "x"), max_size=3))  # deleted objects, not in the inventory
    budget = draw(st.one_of(st.none(), st.integers(0, 20)))
    ratio = draw(st.one_of(st.none(), st.floats(0, 1)))
    k = draw(st.integers(0, 15))
    in_flight = draw(st.integers(0, k))
    batch = draw(st.integers(1, 40))
    with_inventory = draw(st.booleans())
    cap = draw(st.sampled_from([2, 3, 24]))  # tiny caps force the thinned search + local search path
    return inventory, changed + extra, budget, ratio, k, in_flight, batch, with_inventory, cap


def brute_force_billed(changed, inventory, k_max, budget):
    changed_set = set(changed)
    unchanged = [p for p in set(inventory) if p not in changed_set]
    dirs = {p[: i + 1] for p in changed for i, ch in enumerate(p) if ch == "/"}
    stats = {d: (sum(p.startswith(d) for p in changed_set), sum(p.startswith(d) for p in unchanged)) for d in dirs}
    best = len(changed_set)
    for r in range(1, min(k_max, len(dirs)) + 1):
        for combo in itertools.combinations(sorted(dirs), r):
            if any(a != b and b.startswith(a) for a in combo for b in combo):
                continue
            if budget is not None and sum(stats[d][1] for d in combo) > budget:
                continue
            best = min(best, r + len(changed_set) - sum(stats[d][0] for d in combo))
    return best


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planning_case())
def test_plan_properties(case):
    inventory, changed, budget, ratio, k, in_flight, batch, with_inventory, cap = case
    cfg = PlannerConfig(max_wildcards=k, max_paths_per_batch=batch, frontier_cap=cap,
                        budget=OverInvalidationBudget(max_objects=budget, max_ratio=ratio))
    plan = plan_invalidation(changed, inventory=inventory if with_inventory else None, config=cfg,
                             wildcards_in_flight=in_flight)
    # Every changed object is covered.
    assert all(covered(plan, p) for p in changed)
    # No batch exceeds the limit, and the plan bills exactly what it sends.
    assert all(1 <= len(b) <= batch for b in plan.batches)
    assert plan.billed_paths == len(plan.paths) == len(set(plan.paths))
    # Wildcards stay within what CloudFront allows in flight, never nested, always at the end.
    assert len(plan.wildcards) <= k - in_flight
    assert all(w.endswith("/*") and w.count("*") == 1 for w in plan.wildcards)
    assert not any(a != b and b.startswith(a[:-1]) for a in plan.wildcards for b in plan.wildcards)
    # Never worse than one path per object.
    assert plan.billed_paths <= len(set(changed))
    if not with_inventory:
        assert plan.wildcards == () and plan.billed_paths == len(set(changed))
        return
    # Over-invalidation is counted right and stays within the budget.
    changed_set = set(changed)
    purged = {p for p in inventory if p not in changed_set and covered(plan, p)}
    assert plan.over_invalidated == len(purged)
    if plan.over_budget is not None:
        assert plan.over_invalidated <= plan.over_budget
    # Optimal whenever the search was exact.
    if plan.exact_search:
        assert plan.billed_paths == brute_force_billed(changed, inventory, k - in_flight, plan.over_budget)
