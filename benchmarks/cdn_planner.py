"""CloudFront path planner: paths billed, wildcards, objects over-invalidated and planning time.

A deterministic generator builds a `--objects` site (default 100,000: sections / sub-sections / leaf
directories of very uneven sizes, plus a flat content-hashed /assets/ directory) and change sets:

* clustered: a few directories rewritten entirely or almost (a release, a re-rendered section), plus a
  few scattered edits;
* scattered: objects picked uniformly at random across the site;
* deploy: every /assets/ object plus a handful of HTML pages.

For each, our plan is printed next to one path per object (no over-invalidation, most paths) and to a
single `/*` (one path, purges everything), and to a proven lower bound on billed paths (Lagrangian
relaxation of the wildcard and budget limits). The budget is `--budget-objects` and `--budget-ratio`.

Then `--small-cases` random small sites are planned and compared with the optimum computed exhaustively
(every antichain of directories within the wildcard and budget limits). Targets: billed paths at most
1.05 x the optimum; planning 100,000 objects in under a second. Exit code 0 unless `--enforce`.

    .venv/bin/python benchmarks/cdn_planner.py
    .venv/bin/python benchmarks/cdn_planner.py --objects 20000 --small-cases 100
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "functions"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from invalidator.cdn_path_planner import (  # noqa: E402
    OverInvalidationBudget,
    PlannerConfig,
    _Tree,
    plan_invalidation,
)

OPTIMUM_TARGET = 1.05
TIME_TARGET_S = 1.0


# --------------------------------------------------------------------------- sites and change sets


def generate_site(objects: int, rng: random.Random) -> list[str]:
    """Sections > sub-sections > leaf directories with heavy-tailed sizes, plus a flat /assets/."""
    paths: list[str] = []
    assets = objects // 10
    paths += [f"/assets/{rng.getrandbits(48):012x}.{rng.choice(['js', 'css', 'woff2', 'wasm'])}"
              for _ in range(assets)]
    section_names = ["docs", "blog", "products", "help", "news", "shop", "learn", "api", "media", "events"]
    leaf_id = 0
    while len(paths) < objects:
        section = rng.choice(section_names)
        sub = f"s{rng.randrange(40)}"
        leaf = f"d{leaf_id}"
        leaf_id += 1
        size = min(objects - len(paths), max(1, int(rng.paretovariate(1.3) * 8)))
        ext = rng.choice(["html", "json", "png", "jpg"])
        paths += [f"/{section}/{sub}/{leaf}/f{i}.{ext}" for i in range(size)]
    return paths


def _dirs(paths: list[str]) -> dict[str, list[str]]:
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        by_dir.setdefault(p[: p.rfind("/") + 1], []).append(p)
    return by_dir


def clustered_changes(site: list[str], rng: random.Random) -> list[str]:
    by_dir = _dirs(site)
    big = sorted((d for d in by_dir if d != "/assets/"), key=lambda d: -len(by_dir[d]))
    changed: set[str] = set()
    for d in rng.sample(big[:200], 6):                      # whole directories rewritten
        changed.update(by_dir[d])
    for d in rng.sample(big[200:1000], 4):                  # directories mostly rewritten
        files = by_dir[d]
        changed.update(rng.sample(files, max(1, int(len(files) * 0.9))))
    section = rng.choice(["/docs/s3/", "/blog/s7/", "/help/s1/"])  # a re-rendered sub-section
    changed.update(p for p in site if p.startswith(section))
    changed.update(rng.sample(site, 300))                   # scattered edits
    return sorted(changed)


def scattered_changes(site: list[str], rng: random.Random, count: int = 2000) -> list[str]:
    return sorted(rng.sample(site, count))


def deploy_changes(site: list[str], rng: random.Random) -> list[str]:
    html = [p for p in site if p.endswith(".html")]
    return sorted([p for p in site if p.startswith("/assets/")] + rng.sample(html, 40))


# --------------------------------------------------------------------------- the exhaustive optimum


def exhaustive_optimum(changed: list[str], inventory: list[str], k_max: int, budget: int | None) -> int:
    """Fewest billed paths over every antichain of directories (wildcards) within the limits."""
    changed_set = set(changed)
    unchanged = [p for p in inventory if p not in changed_set]
    dirs: set[str] = set()
    for p in changed:
        d = p[: p.rfind("/") + 1]
        while True:
            dirs.add(d)
            if d == "/":
                break
            d = d[: d.rfind("/", 0, len(d) - 1) + 1]
    stats = {d: (sum(p.startswith(d) for p in changed), sum(p.startswith(d) for p in unchanged)) for d in dirs}
    useful = [d for d in dirs if stats[d][0] >= 2 and (budget is None or stats[d][1] <= budget)]
    best = len(changed)
    for r in range(1, min(k_max, len(useful)) + 1):
        for combo in itertools.combinations(useful, r):
            if any(a != b and b.startswith(a) for a in combo for b in combo):
                continue  # nested wildcards: never better than the outer one alone
            if budget is not None and sum(stats[d][1] for d in combo) > budget:
                continue
            covered = sum(stats[d][0] for d in combo)
            best = min(best, r + len(changed) - covered)
    return best


def lagrangian_lower_bound(changed: list[str], inventory: list[str], k_max: int, budget: int | None) -> int:
    """A proven lower bound on billed paths for large cases, where exhaustive search is out of reach.

    For any lam, mu >= 0, the best saving is at most lam * budget + mu * k_max + the best antichain with
    weights (C - 1) - lam * U - mu (no limits: a simple pass over the tree). The minimum over a grid of
    (lam, mu) bounds the saving from above, hence billed paths from below.
    """
    changed_set = set(changed)
    tree = _Tree(changed, [p for p in inventory if p not in changed_set])
    cap = budget if budget is not None else 0
    cands = [d for d in tree.order if tree.changed[d] >= 2 and (budget is None or tree.unchanged[d] <= budget)]
    is_cand = set(cands)
    best_bound = float(len(changed))
    lams = [0.0] + [10 ** (e / 4) for e in range(-20, 5)] if budget is not None else [0.0]
    max_saving = max((tree.changed[d] - 1 for d in cands), default=0)
    mus = sorted({0.0, *(float(m) for m in range(0, max_saving + 2, max(1, max_saving // 60)))})
    for lam in lams:
        for mu in mus:
            best: dict[str, float] = {}
            for d in tree.order:
                below = sum(best.get(ch, 0.0) for ch in tree.children.get(d, ()))
                own = tree.changed[d] - 1 - lam * tree.unchanged[d] - mu if d in is_cand else 0.0
                best[d] = max(below, own, 0.0)
            bound = lam * cap + mu * k_max + best["/"]
            best_bound = min(best_bound, bound)
    return len(changed) - int(best_bound + 1e-9)


def small_case(rng: random.Random) -> tuple[list[str], list[str], int, int]:
    """A site of up to ~200 objects in up to ~25 directories, three levels deep, with clustered changes."""
    inventory: list[str] = []
    for _ in range(rng.randint(2, 5)):
        top = f"/{rng.choice('abcdef')}{rng.randrange(3)}/"
        for _ in range(rng.randint(1, 4)):
            d = top + (f"{rng.choice('xyz')}{rng.randrange(2)}/" if rng.random() < 0.8 else "")
            if rng.random() < 0.4:
                d += f"{rng.choice('pq')}/"
            inventory += [f"{d}f{rng.randrange(40)}" for _ in range(rng.randint(1, 15))]
    inventory = sorted(set(inventory))
    by_dir = _dirs(inventory)
    changed: set[str] = set()
    for d in rng.sample(sorted(by_dir), rng.randint(1, len(by_dir))):
        files = by_dir[d]
        changed.update(rng.sample(files, rng.randint(1, len(files))))
    return sorted(changed), inventory, rng.randint(1, 5), rng.randint(0, 25)


# --------------------------------------------------------------------------- reporting


@dataclass
class Row:
    name: str
    changed: int
    billed: int
    wildcards: int
    over: int
    ms: float
    per_object: int
    root_over: int
    exact: bool
    lower_bound: int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--budget-objects", type=int, default=2000)
    parser.add_argument("--budget-ratio", type=float, default=0.05)
    parser.add_argument("--small-cases", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5, help="planning runs per change set (median reported)")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--enforce", action="store_true")
    args = parser.parse_args(argv)

    one, five, _ = os.getloadavg()
    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, {platform.system()} {platform.machine()}; "
          f"load average {one:.2f} / {five:.2f}")
    rng = random.Random(args.seed)
    site = generate_site(args.objects, rng)
    print(f"site: {len(site):,} objects in {len(_dirs(site)):,} directories; budget: at most "
          f"{args.budget_objects:,} objects and {args.budget_ratio:.0%} of the unchanged ones\n")
    config = PlannerConfig(budget=OverInvalidationBudget(max_objects=args.budget_objects, max_ratio=args.budget_ratio))
    rows: list[Row] = []
    for name, changes in (("clustered", clustered_changes(site, rng)), ("scattered", scattered_changes(site, rng)),
                          ("deploy", deploy_changes(site, rng))):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            plan = plan_invalidation(changes, inventory=site, config=config)
            times.append(time.perf_counter() - t0)
        covered = {p for p in plan.paths if not p.endswith("*")}
        prefixes = tuple(w[:-1] for w in plan.wildcards)
        assert all(p in covered or p.startswith(prefixes) for p in changes), "a changed object is not covered"
        bound = lagrangian_lower_bound(changes, site, config.max_wildcards, plan.over_budget)
        rows.append(Row(name, len(changes), plan.billed_paths, len(plan.wildcards), plan.over_invalidated or 0,
                        statistics.median(times) * 1000, len(changes), len(site) - len(changes), plan.exact_search,
                        bound))

    print("| change set | changed objects | ours: billed paths | ours: wildcards | ours: over-invalidated | "
          "ours: planning (ms) | one path per object: billed | `/*`: billed / over-invalidated | "
          "billed vs per-object | search | proven lower bound | billed / bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.changed:,} | {r.billed:,} | {r.wildcards} | {r.over:,} | {r.ms:.0f} | "
              f"{r.per_object:,} | 1 / {r.root_over:,} | {r.billed / r.per_object:.3f} | "
              f"{'exact' if r.exact else 'thinned + local'} | {r.lower_bound:,} | {r.billed / r.lower_bound:.3f} |")
    worst_ms = max(r.ms for r in rows)

    ratios = []
    exact_cases = 0
    small_rng = random.Random(args.seed + 1)
    t_small = time.perf_counter()
    for _ in range(args.small_cases):
        changed, inventory, k_max, budget = small_case(small_rng)
        cfg = PlannerConfig(max_wildcards=k_max, budget=OverInvalidationBudget(max_objects=budget))
        plan = plan_invalidation(changed, inventory=inventory, config=cfg)
        optimum = exhaustive_optimum(changed, inventory, k_max, budget)
        ratios.append(plan.billed_paths / optimum)
        exact_cases += plan.billed_paths == optimum
    small_s = time.perf_counter() - t_small
    print(f"\nsmall cases vs the exhaustive optimum ({args.small_cases} random sites of up to ~200 objects in "
          f"up to ~25 directories, 1-5 wildcards, budget 0-25 objects; {small_s:.1f} s):")
    print("| cases | plan = optimum | worst billed / optimum | mean billed / optimum |")
    print("|---:|---:|---:|---:|")
    print(f"| {len(ratios)} | {exact_cases} | {max(ratios):.3f} | {statistics.fmean(ratios):.4f} |\n")

    ok_opt = max(ratios) <= OPTIMUM_TARGET
    ok_time = worst_ms / 1000 < TIME_TARGET_S
    print(f"billed <= {OPTIMUM_TARGET} x optimum on small cases: {'met' if ok_opt else 'NOT met'} "
          f"(worst {max(ratios):.3f})")
    print(f"planning {len(site):,} objects < {TIME_TARGET_S:g} s: {'met' if ok_time else 'NOT met'} "
          f"(slowest change set {worst_ms:.0f} ms, median of {args.repeat})")
    return 1 if args.enforce and not (ok_opt and ok_time) else 0


if __name__ == "__main__":
    sys.exit(main())
