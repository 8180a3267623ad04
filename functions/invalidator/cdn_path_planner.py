"""Plan CloudFront invalidation paths: cover every changed object, bill few paths, purge little else.

CloudFront bills each invalidation path, a wildcard (`/dir/*`) as one; at most 3,000 paths fit a request
and at most 15 wildcard paths may be in progress at once. Collapsing a directory into a wildcard saves
(changed objects under it - 1) billed paths, but also purges the unchanged objects under it
("over-invalidation", which turns into origin load). The planner chooses which directories to collapse.

The model: a tree over path segments (a trie of directories) where each directory knows C, the changed
objects under it, and U, the unchanged inventory objects under it. A set of wildcards is an antichain of
directories W (nested wildcards are pointless) with |W| <= the wildcards available and sum U(w) <= the
over-invalidation budget; it saves sum (C(w) - 1) billed paths. The planner maximizes that saving with
a dynamic programme over the tree whose states, per directory, are the Pareto-optimal
(wildcards used, objects over-invalidated, paths saved) combinations of its subtree. It is exact while
those sets stay small (always on small sites); on large ones it keeps an evenly spread subset of
`frontier_cap` states per directory and then improves the result by local search (add a wildcard, or
swap one for a better one); `CdnPlan.exact_search` says which happened. Directories that cannot help are
never visited: a directory needs C >= 2 and U within the budget, and one whose changes all lie under a
single child is dominated by that child (same saving, no less over-invalidation).

Without an inventory nothing is known about U: only exact paths, or wildcards under prefixes the config
explicitly allows (`wildcard_prefixes_without_inventory`), are used.

Cache-tag items (`#tag`) pass through unchanged when the distribution has `CacheTagConfig` and the config
enables them; each is billed as one path. Validation errors name the offending field; nothing is planned.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

CLOUDFRONT_MAX_PATHS_PER_BATCH = 3000
CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT = 15
MAX_PATH_LENGTH = 4000
DEFAULT_PRICE_PER_PATH = Decimal("0.005")
FREE_PATHS_PER_MONTH = 1000
DEFAULT_FRONTIER_CAP = 24
TAG_PREFIX = "#"

# Whitespace and control characters are never valid in a path; `*` is a wildcard, not an object.
_BAD_PATH_CHAR = re.compile(r"[\s\x00-\x1f\x7f*]")
_BAD_TAG_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


class PlanInputError(ValueError):
    """Input that cannot be planned; `field` names it (e.g. `paths[3]`). Nothing is sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class OverInvalidationBudget:
    """How many unchanged objects wildcards may purge: an absolute count and/or a ratio.

    `max_ratio` is a fraction of the unchanged objects of the inventory. Both limits apply when both are
    set; None means no limit of that kind; both None means no limit at all.
    """

    max_objects: int | None = 0
    max_ratio: float | None = None

    def limit(self, unchanged_total: int) -> int | None:
        limits = []
        if self.max_objects is not None:
            limits.append(self.max_objects)
        if self.max_ratio is not None:
            limits.append(int(self.max_ratio * unchanged_total))
        return min(limits) if limits else None


@dataclass(frozen=True)
class PlannerConfig:
    max_paths_per_batch: int = CLOUDFRONT_MAX_PATHS_PER_BATCH
    max_wildcards: int = CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT
    budget: OverInvalidationBudget = field(default_factory=OverInvalidationBudget)
    # Without an inventory, wildcards only under these directory prefixes (each ends with "/").
    wildcard_prefixes_without_inventory: tuple[str, ...] = ()
    cache_tags_enabled: bool = False
    # Refuse plans that would bill more than this many paths (None: no limit).
    max_total_paths: int | None = None
    max_path_length: int = MAX_PATH_LENGTH
    # Optional exchange rate: a wildcard may purge at most this many unchanged objects per billed path it
    # saves (None: only the budget limits it). E.g. 100: saving $0.005 is not worth purging 500 objects.
    max_over_per_saved_path: float | None = None
    price_per_path: Decimal = DEFAULT_PRICE_PER_PATH
    free_paths_per_month: int = FREE_PATHS_PER_MONTH
    frontier_cap: int = DEFAULT_FRONTIER_CAP

    def __post_init__(self) -> None:
        if not 1 <= self.max_paths_per_batch <= CLOUDFRONT_MAX_PATHS_PER_BATCH:
            raise PlanInputError("max_paths_per_batch", f"must be in [1, {CLOUDFRONT_MAX_PATHS_PER_BATCH}]")
        if not 0 <= self.max_wildcards <= CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT:
            raise PlanInputError("max_wildcards", f"must be in [0, {CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT}]")
        if self.budget.max_objects is not None and self.budget.max_objects < 0:
            raise PlanInputError("budget.max_objects", "must not be negative")
        if self.budget.max_ratio is not None and not 0 <= self.budget.max_ratio <= 1:
            raise PlanInputError("budget.max_ratio", "must be in [0, 1]")
        for i, prefix in enumerate(self.wildcard_prefixes_without_inventory):
            if not prefix.startswith("/") or not prefix.endswith("/") or _BAD_PATH_CHAR.search(prefix):
                raise PlanInputError(f"wildcard_prefixes_without_inventory[{i}]",
                                     "must be a directory path starting and ending with '/'")
        if self.max_total_paths is not None and self.max_total_paths < 1:
            raise PlanInputError("max_total_paths", "must be positive")
        if self.price_per_path < 0 or self.free_paths_per_month < 0:
            raise PlanInputError("price_per_path", "prices and free allowances must not be negative")
        if self.max_over_per_saved_path is not None and self.max_over_per_saved_path < 0:
            raise PlanInputError("max_over_per_saved_path", "must not be negative")
        if self.frontier_cap < 2:
            raise PlanInputError("frontier_cap", "must be at least 2")


@dataclass(frozen=True)
class CdnPlan:
    """The paths to send, in batches, and what they cost and purge."""

    batches: tuple[tuple[str, ...], ...]
    wildcards: tuple[str, ...]          # chosen by the planner (requested ones are in `requested_wildcards`)
    requested_wildcards: tuple[str, ...]
    exact_paths: int
    tag_items: int
    changed_objects: int                # distinct changed paths asked for
    billed_paths: int                   # every path sent: exact + wildcards + tags
    estimated_cost_usd: Decimal
    over_invalidated: int | None        # unchanged inventory objects purged; None when unknown (no inventory)
    over_budget: int | None             # the budget applied (None: unlimited or no inventory)
    inventory_objects: int | None
    exact_search: bool                  # False when some frontier was thinned (large inputs)
    planning_s: float

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for batch in self.batches for p in batch)

    def as_audit(self, *, max_listed: int = 50) -> dict[str, Any]:
        """For the audit record: counts, cost, every wildcard, and the first `max_listed` paths sent."""
        sent = self.paths
        return {
            "changed_objects": self.changed_objects, "billed_paths": self.billed_paths,
            "exact_paths": self.exact_paths, "tag_items": self.tag_items,
            "wildcards": list(self.requested_wildcards + self.wildcards), "batches": len(self.batches),
            "estimated_cost_usd": str(self.estimated_cost_usd), "over_invalidated": self.over_invalidated,
            "over_budget": self.over_budget, "paths_sample": list(sent[:max_listed]),
            "paths_truncated": len(sent) > max_listed,
        }


# --------------------------------------------------------------------------- validation


def _validate_items(items: Iterable[str], config: PlannerConfig) -> tuple[list[str], list[str]]:
    if isinstance(items, str | bytes):
        raise PlanInputError("paths", "must be a list of paths")
    paths: dict[str, None] = {}
    tags: dict[str, None] = {}
    for i, item in enumerate(items):
        where = f"paths[{i}]"
        if not isinstance(item, str):
            raise PlanInputError(where, f"must be a string, got {type(item).__name__}")
        if item.startswith(TAG_PREFIX):
            if not config.cache_tags_enabled:
                raise PlanInputError(where, "cache-tag items (#tag) are not enabled for this distribution")
            if len(item) < 2 or len(item) > config.max_path_length or _BAD_TAG_CHAR.search(item):
                raise PlanInputError(where, "a cache tag is '#' followed by a name without whitespace")
            tags[item] = None
            continue
        if not item.startswith("/"):
            raise PlanInputError(where, f"must start with '/': {item[:80]!r}")
        if len(item) > config.max_path_length:
            raise PlanInputError(where, f"is longer than {config.max_path_length} characters")
        bad = _BAD_PATH_CHAR.search(item)
        if bad:
            what = "'*' (wildcards are chosen by the planner or requested separately)" if bad.group() == "*" \
                else "whitespace or control characters"
            raise PlanInputError(where, f"must not contain {what}")
        paths[item] = None
    if not paths and not tags:
        raise PlanInputError("paths", "must not be empty")
    return list(paths), list(tags)


def _validate_wildcards(wildcards: Iterable[str], config: PlannerConfig) -> list[str]:
    out: dict[str, None] = {}
    for i, w in enumerate(wildcards):
        where = f"wildcards[{i}]"
        if not isinstance(w, str) or not w.startswith("/") or not w.endswith("*"):
            raise PlanInputError(where, "a wildcard path starts with '/' and ends with '*'")
        if len(w) > config.max_path_length or _BAD_PATH_CHAR.search(w[:-1]):
            raise PlanInputError(where, "CloudFront allows '*' only at the end, and no whitespace")
        out[w] = None
    return list(out)


# --------------------------------------------------------------------------- the directory tree


def _dir_of(path: str) -> str:
    return path[: path.rfind("/") + 1]


def _parent_dir(d: str) -> str:
    return d[: d.rfind("/", 0, len(d) - 1) + 1]


class _Tree:
    """Directories with C (changed objects below) and U (unchanged inventory objects below)."""

    def __init__(self, changed: Sequence[str], unchanged: Iterable[str] | None) -> None:
        c_direct = Counter(map(_dir_of, changed))
        u_direct: Counter[str] = Counter(map(_dir_of, unchanged)) if unchanged is not None else Counter()
        dirs = set(c_direct)
        dirs.update(u_direct)
        # Only ancestors of directories holding a changed object can be wildcard candidates, but the
        # unchanged counts must reach every ancestor, so walk all of them.
        for d in list(dirs):
            while d != "/":
                d = _parent_dir(d)
                if d in dirs:
                    break
                dirs.add(d)
        dirs.add("/")
        self.order = sorted(dirs, key=lambda d: (-len(d), d))  # a child's name is longer than its parent's
        self.changed: dict[str, int] = dict.fromkeys(self.order, 0)
        self.unchanged: dict[str, int] = dict.fromkeys(self.order, 0)
        self.children: dict[str, list[str]] = {}
        changed_n, unchanged_n = self.changed, self.unchanged
        for d in self.order:
            changed_n[d] += c_direct.get(d, 0)
            unchanged_n[d] += u_direct.get(d, 0)
            if d != "/":
                p = _parent_dir(d)
                changed_n[p] += changed_n[d]
                unchanged_n[p] += unchanged_n[d]
                if changed_n[d]:
                    self.children.setdefault(p, []).append(d)


# A state of the dynamic programme: (wildcards used, over-invalidated, paths saved, picks), where picks is
# a persistent tree of chosen directories: None, a directory, or a pair of picks.
_State = tuple[int, int, int, Any]
_EMPTY: _State = (0, 0, 0, None)


def _prune(states: list[_State], cap: int) -> tuple[list[_State], bool]:
    """Pareto-optimal states (fewer wildcards, less over-invalidation, more saving), at most `cap` of them."""
    states.sort(key=lambda s: (s[1], -s[2], s[0]))
    kept: list[_State] = []
    best_by_k: dict[int, int] = {}
    for st in states:
        k, _, saved, _ = st
        # Dominated if a state with no more wildcards and no more over-invalidation saves at least as much.
        if any(best >= saved for kk, best in best_by_k.items() if kk <= k):
            continue
        kept.append(st)
        best_by_k[k] = saved
    if len(kept) <= cap:
        return kept, False
    # Thin evenly along over-invalidation, always keeping the cheapest and the best-saving state.
    best = max(kept, key=lambda s: (s[2], -s[1]))
    spread = cap - 1
    step = (len(kept) - 1) / max(1, spread - 1)
    chosen = {round(i * step) for i in range(spread)}
    thinned = [kept[i] for i in sorted(chosen)]
    if best not in thinned:
        thinned.append(best)
    return thinned, True


def _merge(a: list[_State], b: list[_State], k_max: int, budget: int | None, cap: int) -> tuple[list[_State], bool]:
    out: list[_State] = []
    for ka, oa, sa, pa in a:
        for kb, ob, sb, pb in b:
            k = ka + kb
            if k > k_max:
                continue
            o = oa + ob
            if budget is not None and o > budget:
                continue
            out.append((k, o, sa + sb, pb if pa is None else pa if pb is None else (pa, pb)))
    return _prune(out, cap)


def _flatten(picks: Any, out: list[str]) -> None:
    stack = [picks]
    while stack:
        p = stack.pop()
        if p is None:
            continue
        if isinstance(p, str):
            out.append(p)
        else:
            stack.extend(p)


def choose_wildcards(tree: _Tree, *, k_max: int, budget: int | None, allowed: Sequence[str] | None,
                     cap: int, max_over_per_saved: float | None = None) -> tuple[list[str], bool]:
    """Directories to collapse into wildcards (best saving within k_max and budget); and whether exact."""
    if k_max <= 0:
        return [], True
    changed, unchanged, children = tree.changed, tree.unchanged, tree.children

    def candidate(d: str) -> bool:
        c = changed[d]
        if c < 2 or (budget is not None and unchanged[d] > budget):
            return False
        if max_over_per_saved is not None and unchanged[d] > max_over_per_saved * (c - 1):
            return False
        if allowed is not None and not any(d.startswith(p) for p in allowed):
            return False
        # Dominated by a child holding all of the changes (same saving, no more over-invalidation).
        return not any(changed[ch] == c for ch in children.get(d, ()))

    frontier: dict[str, list[_State]] = {}
    exact = True
    for d in tree.order:  # children before parents
        kids = [frontier[ch] for ch in children.get(d, ()) if ch in frontier]
        own = candidate(d)
        if not kids and not own:
            continue
        states = kids[0] if kids else [_EMPTY]
        for other in kids[1:]:
            states, thinned = _merge(states, other, k_max, budget, cap)
            exact &= not thinned
        if own:
            states = [*states, (1, unchanged[d], changed[d] - 1, d)]
            states, thinned = _prune(states, cap)
            exact &= not thinned
        frontier[d] = states
        for ch in children.get(d, ()):
            frontier.pop(ch, None)  # no longer needed: keeps memory flat
    root = frontier.get("/", [_EMPTY])
    best = max(root, key=lambda s: (s[2], -s[1], -s[0]))
    picks: list[str] = []
    _flatten(best[3], picks)
    if not exact:
        candidates = sorted((d for d in tree.order if candidate(d)), key=lambda d: (-changed[d], unchanged[d], d))
        picks = _local_search(picks, candidates, tree, k_max=k_max, budget=budget)
    return sorted(picks), exact


def _local_search(picks: list[str], candidates: list[str], tree: _Tree, *, k_max: int, budget: int | None,
                  rounds: int = 8) -> list[str]:
    """Improve a plan found with thinned frontiers: add a wildcard, or swap one for a better one.

    Only disjoint moves (the tree search already weighed parents against children). `candidates` are
    sorted by saving, best first, so each scan stops as soon as no candidate can beat the best move.
    """
    changed, unchanged = tree.changed, tree.unchanged
    chosen = list(picks)
    over = sum(unchanged[d] for d in chosen)
    limit = budget if budget is not None else float("inf")

    def disjoint(c: str, others: Iterable[str]) -> bool:
        return all(not c.startswith(w) and not w.startswith(c) for w in others)

    for _ in range(rounds):
        best_gain = 0
        best_move: tuple[str | None, str] | None = None
        if len(chosen) < k_max:
            for c in candidates:
                gain = changed[c] - 1
                if gain <= best_gain:
                    break
                if c not in chosen and over + unchanged[c] <= limit and disjoint(c, chosen):
                    best_gain, best_move = gain, (None, c)
                    break
        for w in chosen:
            rest = [x for x in chosen if x != w]
            for c in candidates:
                gain = changed[c] - changed[w]
                if gain <= best_gain:
                    break
                if c not in chosen and over - unchanged[w] + unchanged[c] <= limit and disjoint(c, rest):
                    best_gain, best_move = gain, (w, c)
                    break
        if best_move is None:
            break
        out, into = best_move
        if out is not None:
            chosen.remove(out)
            over -= unchanged[out]
        chosen.append(into)
        over += unchanged[into]
    return chosen


# --------------------------------------------------------------------------- the planner


def plan_invalidation(changed: Iterable[str], *, inventory: Iterable[str] | None = None,
                      config: PlannerConfig | None = None, wildcards_in_flight: int = 0,
                      requested_wildcards: Iterable[str] = (), paths_billed_this_month: int = 0) -> CdnPlan:
    """Plan the invalidation of `changed` (object paths and, if enabled, `#tag` items).

    `inventory`: every object path the distribution serves (e.g. an S3 listing) — needed to judge what a
    wildcard would purge. `wildcards_in_flight`: wildcard paths of invalidations still in progress (they
    count against CloudFront's 15). `requested_wildcards`: wildcards asked for explicitly (sent as they
    are; their over-invalidation is reported but not budgeted). `paths_billed_this_month` uses up the
    free allowance in the cost estimate.
    """
    started = time.perf_counter()
    cfg = config or PlannerConfig()
    paths, tags = _validate_items(changed, cfg)
    requested = _validate_wildcards(requested_wildcards, cfg)
    if not 0 <= wildcards_in_flight <= CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT:
        raise PlanInputError("wildcards_in_flight", f"must be in [0, {CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT}]")
    k_max = cfg.max_wildcards - wildcards_in_flight - len(requested)
    if k_max < 0:
        raise PlanInputError("wildcards", f"{len(requested)} requested wildcards exceed the "
                             f"{cfg.max_wildcards - wildcards_in_flight} CloudFront allows in flight now")
    requested_prefixes = tuple(w[:-1] for w in requested)
    remaining = [p for p in paths if not p.startswith(requested_prefixes)] if requested else paths

    inventory_objects: int | None = None
    over_budget: int | None = None
    chosen: list[str] = []
    exact = True
    requested_over = 0
    over = 0
    if remaining or requested:
        if inventory is not None:
            if isinstance(inventory, str | bytes):
                raise PlanInputError("inventory", "must be a list of paths")
            inventory_set = set(inventory)
            for i, p in enumerate(inventory_set):
                if not isinstance(p, str) or not p.startswith("/"):
                    raise PlanInputError("inventory", f"entry {i} is not a path starting with '/'")
            changed_set = set(paths)
            unchanged = inventory_set - changed_set
            inventory_objects = len(inventory_set | changed_set)
            if requested:
                requested_over = sum(1 for p in unchanged if p.startswith(requested_prefixes))
                unchanged = {p for p in unchanged if not p.startswith(requested_prefixes)}
            over_budget = cfg.budget.limit(len(unchanged))
            tree = _Tree(remaining, unchanged)
            chosen, exact = choose_wildcards(tree, k_max=k_max, budget=over_budget, allowed=None,
                                             cap=cfg.frontier_cap, max_over_per_saved=cfg.max_over_per_saved_path)
            over = sum(tree.unchanged[d] for d in chosen)
        elif cfg.wildcard_prefixes_without_inventory and remaining:
            tree = _Tree(remaining, None)
            chosen, exact = choose_wildcards(tree, k_max=k_max, budget=None,
                                             allowed=cfg.wildcard_prefixes_without_inventory, cap=cfg.frontier_cap)

    wildcards = tuple(d + "*" for d in chosen)
    prefixes = tuple(chosen)
    exact_paths = sorted(p for p in remaining if not p.startswith(prefixes)) if prefixes else sorted(remaining)
    items = [*requested, *wildcards, *tags, *exact_paths]
    billed = len(items)
    if cfg.max_total_paths is not None and billed > cfg.max_total_paths:
        raise PlanInputError("paths", f"the plan needs {billed} paths, more than the {cfg.max_total_paths} allowed")
    size = cfg.max_paths_per_batch
    batches = tuple(tuple(items[i:i + size]) for i in range(0, len(items), size))
    free_left = max(0, cfg.free_paths_per_month - max(0, paths_billed_this_month))
    cost = (Decimal(max(0, billed - free_left)) * cfg.price_per_path).quantize(Decimal("0.001"))
    if inventory is not None:
        over_invalidated: int | None = over + requested_over
    else:
        over_invalidated = 0 if not (wildcards or requested) else None
    return CdnPlan(batches=batches, wildcards=wildcards, requested_wildcards=tuple(requested),
                   exact_paths=len(exact_paths), tag_items=len(tags), changed_objects=len(paths),
                   billed_paths=billed, estimated_cost_usd=cost, over_invalidated=over_invalidated,
                   over_budget=over_budget, inventory_objects=inventory_objects, exact_search=exact,
                   planning_s=time.perf_counter() - started)
