"""Cold start: fresh-process import time of every Lambda handler, next to `import boto3` alone.

For each `functions/<name>/handler.py` (discovered, so new functions are included automatically)
and for the baseline `import boto3`, a fresh Python process (this interpreter, no `-X importtime`)
times the import statement with `time.perf_counter_ns()` and prints it; the parent also times the
whole process (start-up + import + exit). Runs are interleaved (baseline, fn1, fn2, baseline, ...)
so drift hits both sides alike; the table reports medians and p90 of `--runs` rounds, and the ratio
handler / boto3 from the same run. Target: ratio <= 1.3. This is a measurement, not a gate: the exit
code is 0 unless `--enforce` is given.

What the child processes see (the choices are explained in docs/benchmarks.md):

* the environment a deployed function has at import time: LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME,
  AWS_REGION / AWS_DEFAULT_REGION, POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE, X-Ray daemon
  variables. POWERTOOLS_TRACE_DISABLED is NOT set (unless `--trace-disabled`): the functions run with
  active tracing, so Powertools' Tracer is enabled, imports aws_xray_sdk and patches every library it
  supports at import time; that cost is counted.
* `--site lambda` (default): only the packages a deployed function can import: the dependency closure
  of requirements.txt plus boto3 (provided by the Lambda runtime), as symlinks to this venv's copies,
  with `python -S` so the rest of the dev venv (requests, psycopg, moto, ...) is invisible. Otherwise
  X-Ray's patch_all would import dev-only libraries that are not in the Lambda bundle.
  `--site venv` measures against the whole dev venv instead.
* `--bytecode cached` (default): PYTHONDONTWRITEBYTECODE is unset and every child uses one
  PYTHONPYCACHEPREFIX outside the checkout, warmed by the discarded warm-up round, so both sides load
  cached bytecode (checked: the cache must not grow during the measured rounds).
  `--bytecode as-deployed`: like a Lambda bundle built where no Python 3.14 was found to compile it (sources
  only, read-only /var/task): functions/ and the bundled packages are compiled from source in every process;
  the runtime-provided SDK (boto3, botocore, s3transfer and what only they need) and the stdlib stay cached.

`--breakdown [FUNCTION]` runs `-X importtime` instead and lists the top modules by cumulative import
time among those that `import boto3` alone does not import (what there is to trim).

    .venv/bin/python benchmarks/cold_start.py [--runs 15] [--enforce]
    .venv/bin/python benchmarks/cold_start.py --breakdown scaler
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata as metadata
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
REQUIREMENTS = ROOT / "requirements.txt"
TARGET_RATIO = 1.3
BASELINE_MODULE = "boto3"
# Provided by the Lambda Python runtime, not bundled (as constructs/reflex_constructs/functions_asset.py).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})
METRICS_NAMESPACE = "Reflex"
MARKER = "reflex-bench-import-ns"

CHILD_CODE = """\
import time
_t0 = time.perf_counter_ns()
import {module}
_t1 = time.perf_counter_ns()
print("{marker}", _t1 - _t0, flush=True)
"""


# --------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Target:
    label: str  # "import boto3" for the baseline, the function directory name otherwise
    module: str  # what the child imports
    service: str  # POWERTOOLS_SERVICE_NAME, as the CDK constructs set it (the reaction name)


@dataclass
class Samples:
    import_ns: list[int] = field(default_factory=list)
    wall_ns: list[int] = field(default_factory=list)


def discover_functions() -> list[Target]:
    return [
        Target(label=p.parent.name, module=f"{p.parent.name}.handler", service=p.parent.name)
        for p in sorted(FUNCTIONS.glob("*/handler.py"))
    ]


# The floor: what every handler must import before any code of ours runs (the packages the issue mandates,
# imported and set up the way reflex_core/observability.py and reflex_core/triggers.py do, garbage
# collection paused as in the handlers). No handler can import faster than this; its ratio to `import boto3`
# is the lowest ratio reachable without moving these imports out of the Lambda INIT phase.
FLOOR_MODULE = "reflex_bench_floor"
FLOOR_SOURCE = """\
import gc
gc.disable()
import boto3
from pydantic import BaseModel
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext
logger = Logger(service="floor")
tracer = Tracer(service="floor", patch_modules=["botocore"])
metrics = Metrics(namespace="Reflex", service="floor")
gc.freeze()
gc.enable()
"""


def floor_target() -> Target:
    return Target(label="floor: libraries only", module=FLOOR_MODULE, service="reflex")


def baseline_target() -> Target:
    return Target(label=f"import {BASELINE_MODULE}", module=BASELINE_MODULE, service="reflex")


# --------------------------------------------------------------------------- a Lambda-like package set


def _requirement_cls() -> Any:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pytest depends on packaging, and pip always vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    return Requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def closure(roots: list[str], stop: frozenset[str] = frozenset()) -> list[metadata.Distribution]:
    """The installed distributions `roots` need (markers evaluated here), not walking into `stop`."""
    requirement = _requirement_cls()
    seen: set[tuple[str, str]] = set()
    dists: dict[str, metadata.Distribution] = {}
    queue = [requirement(r) for r in roots]
    while queue:
        req = queue.pop()
        name = _canonical(req.name)
        new = {e for e in (set(req.extras) | {""}) if (name, e) not in seen}
        if name in stop or not new:
            continue
        seen.update((name, e) for e in new)
        try:
            dist = dists.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} (needed by the Lambda bundle) is not installed; run `make setup`") from None
        dists[name] = dist
        for spec in dist.requires or []:
            dep = requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in new):
                queue.append(dep)
    return sorted(dists.values(), key=lambda d: _canonical(d.metadata["Name"]))


def top_level_names(dist: metadata.Distribution) -> list[str]:
    """What a distribution puts at the top of site-packages: packages, modules, its .dist-info."""
    names = {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}
    return sorted(n for n in names if Path(str(dist.locate_file(n))).exists())


def build_lambda_site(cache_dir: Path) -> Path:
    """A directory of symlinks to exactly the packages a deployed function can import (cached)."""
    dists = closure([*sorted(RUNTIME_PROVIDED), *_requirements()])
    names = [f"{d.metadata['Name']}=={d.version}" for d in dists]
    key = hashlib.sha256("\n".join([sys.executable, *names]).encode()).hexdigest()[:12]
    site = cache_dir / f"lambda-site-{key}"
    if site.is_dir():
        return site
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lambda-site-", dir=cache_dir))
    for dist in dists:
        for top in top_level_names(dist):
            if not (staging / top).exists():
                (staging / top).symlink_to(Path(str(dist.locate_file(top))))
    with contextlib.suppress(OSError):  # built concurrently by another run: use theirs
        staging.rename(site)
    return site


# --------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Setup:
    site: str  # "lambda" | "venv"
    site_dir: Path | None  # the Lambda-like site, or None for the whole venv
    pycache: Path
    bytecode: str  # "cached" | "as-deployed"
    region: str
    trace_disabled: bool
    write_bytecode: bool = True  # False once an as-deployed cache has been stripped

    @property
    def floor_dir(self) -> Path:
        """Where the floor module is written (next to the bytecode cache, outside the checkout)."""
        folder = self.pycache.parent / "floor"
        folder.mkdir(parents=True, exist_ok=True)
        module = folder / f"{FLOOR_MODULE}.py"
        if not module.exists() or module.read_text() != FLOOR_SOURCE:
            module.write_text(FLOOR_SOURCE)
        return folder

    def command(self, code: str, *, importtime: bool = False) -> list[str]:
        cmd = [sys.executable]
        if self.site == "lambda":
            cmd.append("-S")  # no site-packages of the dev venv; PYTHONPATH below is all there is
        if importtime:
            cmd += ["-X", "importtime"]
        return [*cmd, "-c", code]

    def env(self, target: Target) -> dict[str, str]:
        dropped = ("PYTHON", "POWERTOOLS_", "AWS_", "_AWS_", "REFLEX_", "LAMBDA_", "_X_AMZN_", "_HANDLER")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        path = [str(FUNCTIONS), str(self.floor_dir)] + ([str(self.site_dir)] if self.site_dir else [])
        env.update({
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONPYCACHEPREFIX": str(self.pycache),
            # What the Lambda service sets before the handler module is imported.
            "LAMBDA_TASK_ROOT": str(FUNCTIONS),
            "_HANDLER": f"{target.module}.lambda_handler",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
            "AWS_LAMBDA_FUNCTION_NAME": f"reflex-bench-{target.service}",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
            "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
            "_AWS_XRAY_DAEMON_PORT": "2000",
            "TZ": ":UTC",
            # What the CDK constructs set.
            "POWERTOOLS_SERVICE_NAME": target.service,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        })
        if not self.write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.trace_disabled:
            env["POWERTOOLS_TRACE_DISABLED"] = "true"
        return env

    def uncompiled_sources(self) -> list[Path]:
        """What the Lambda bundle ships as source only: functions/ and the bundled packages."""
        bundled = closure(_requirements(), stop=RUNTIME_PROVIDED)
        roots = [FUNCTIONS]
        for dist in bundled:
            for top in top_level_names(dist):
                roots.append(self.site_dir / top if self.site_dir else Path(str(dist.locate_file(top))))
        return roots

    def strip_bytecode(self) -> Setup:
        """Delete the cached bytecode of `uncompiled_sources()` and stop writing any (as-deployed)."""
        for source in self.uncompiled_sources():
            cached = self.pycache / source.absolute().relative_to(source.absolute().anchor)
            if cached.is_dir():
                shutil.rmtree(cached)
            for pyc in cached.parent.glob(f"{source.stem}.*.pyc"):  # a top-level module (six.py, ...)
                pyc.unlink()
        return dataclasses.replace(self, write_bytecode=False)


def run_import(setup: Setup, target: Target) -> tuple[int, int]:
    """(import ns measured inside the child, whole-process wall ns measured here)."""
    code = CHILD_CODE.format(module=target.module, marker=MARKER)
    start = time.perf_counter_ns()
    proc = subprocess.run(setup.command(code), env=setup.env(target), cwd=ROOT,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter_ns() - start
    match = re.search(rf"^{MARKER} (\d+)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not match:
        sys.stderr.write(f"`import {target.module}` failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}\n")
        raise SystemExit(2)
    return int(match.group(1)), wall


def cache_files(pycache: Path) -> int:
    return sum(1 for _ in pycache.rglob("*.pyc")) if pycache.is_dir() else 0


# --------------------------------------------------------------------------- statistics and output


def median_ms(values: list[int]) -> float:
    return statistics.median(values) / 1e6


def p90_ms(values: list[int]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] / 1e6  # nearest rank


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [i > 0 for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
        return "| " + " | ".join(padded) + " |"

    print(line(headers))
    rules = (("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True))
    print("|" + "|".join(rules) + "|")
    for row in rows:
        print(line(row))


def load_note(own: float = 0.0) -> str:
    """The machine may be shared: other work inflates both sides, and the spread more than the ratio.

    `own` is the load this benchmark adds itself (about 1: one child at a time) when read after the run.
    """
    try:
        one, five, _ = os.getloadavg()
    except OSError:  # pragma: no cover
        return "load average unknown"
    busy = one - own > 0.5 * (os.cpu_count() or 1)
    note = " (busy: figures are noisier, re-run on an idle machine)" if busy else ""
    mine = f", about {own:.0f} of it from this benchmark" if own else ""
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min{mine}){note}"


def describe(setup: Setup, rounds: str) -> None:
    print(f"python {platform.python_version()} ({sys.executable}), nproc {os.cpu_count()}, "
          f"{platform.system()} {platform.machine()}")
    site = (f"lambda (requirements.txt closure + runtime boto3, python -S): {setup.site_dir}"
            if setup.site == "lambda" else "venv (the whole dev venv)")
    print(f"site: {site}")
    tracing = "disabled (POWERTOOLS_TRACE_DISABLED=true)" if setup.trace_disabled else "enabled, as in Lambda"
    bytecode = ("cached for both sides" if setup.bytecode == "cached" else
                "as deployed (functions/ and bundled packages compiled from source; SDK and stdlib cached)")
    print(f"tracing: {tracing}; bytecode: {bytecode} ({setup.pycache})")
    print(f"{rounds}; {load_note()}\n")


# --------------------------------------------------------------------------- the benchmark


def measure(setup: Setup, functions: list[Target], runs: int, warmup: int) -> dict[str, Samples]:
    baseline = baseline_target()
    order = [baseline, floor_target(), *functions]
    samples = {t.label: Samples() for t in order}
    cached_before = 0
    for round_no in range(warmup + runs):
        if round_no == warmup:
            if setup.bytecode == "as-deployed":
                setup = setup.strip_bytecode()
            cached_before = cache_files(setup.pycache)
        for target in order:
            imported, wall = run_import(setup, target)
            if round_no >= warmup:
                samples[target.label].import_ns.append(imported)
                samples[target.label].wall_ns.append(wall)
        print(f"  round {round_no + 1}/{warmup + runs}{' (warm-up)' if round_no < warmup else ''}",
              file=sys.stderr, end="\r")
    print(file=sys.stderr)
    grown = cache_files(setup.pycache) - cached_before
    if grown:
        print(f"warning: {grown} bytecode files were written during the measured rounds; "
              "raise --warmup", file=sys.stderr)
    return samples


def report(samples: dict[str, Samples], functions: list[Target]) -> bool:
    base = samples[baseline_target().label]
    floor = samples[floor_target().label]
    base_import, base_wall = median_ms(base.import_ns), median_ms(base.wall_ns)
    floor_import = median_ms(floor.import_ns)
    headers = ["function", "handler import (median ms)", "p90", "import boto3 (median ms)", "p90", "ratio",
               "ours beyond the floor (ms)", "process wall: handler / boto3 (median ms)", "wall ratio", "target",
               "result"]
    rows = []
    all_pass = True
    for fn in [floor_target(), *functions]:
        s = samples[fn.label]
        ratio = median_ms(s.import_ns) / base_import
        wall_ratio = median_ms(s.wall_ns) / base_wall
        ok = ratio <= TARGET_RATIO
        is_floor = fn == floor_target()
        if not is_floor:
            all_pass &= ok
        rows.append([fn.label, f"{median_ms(s.import_ns):.1f}", f"{p90_ms(s.import_ns):.1f}",
                     f"{base_import:.1f}", f"{p90_ms(base.import_ns):.1f}", f"{ratio:.2f}",
                     "-" if is_floor else f"{median_ms(s.import_ns) - floor_import:.1f}",
                     f"{median_ms(s.wall_ns):.1f} / {base_wall:.1f}", f"{wall_ratio:.2f}",
                     f"{TARGET_RATIO}", ("pass" if ok else "FAIL") + (" (floor)" if is_floor else "")])
    print_table(headers, rows)
    print(f"\nfloor = {FLOOR_MODULE}: boto3, pydantic, Powertools Logger/Metrics/Tracer (botocore patched) and "
          "parser models, imported as a handler imports them, none of our code. Its ratio is the least any handler "
          "can reach while importing what it needs during INIT.")
    return all_pass


# --------------------------------------------------------------------------- -X importtime breakdown

_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass
class ImportLine:
    module: str
    self_us: int
    cumulative_us: int
    parent: str


def parse_importtime(stderr: str) -> dict[str, ImportLine]:
    """Modules in -X importtime output with the module that first imported each (post-order tree)."""
    raw = []
    for text in stderr.splitlines():
        m = _IMPORTTIME.match(text)
        if m:
            raw.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3))))
    out: dict[str, ImportLine] = {}
    stack: list[tuple[str, int]] = []  # walking backwards, parents come before their children
    for name, self_us, cum_us, depth in reversed(raw):
        while stack and stack[-1][1] >= depth:
            stack.pop()
        out[name] = ImportLine(name, self_us, cum_us, stack[-1][0] if stack else "<main>")
        stack.append((name, depth))
    return out


def importtime_run(setup: Setup, target: Target) -> dict[str, ImportLine]:
    proc = subprocess.run(setup.command(f"import {target.module}", importtime=True), env=setup.env(target),
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"`import {target.module}` failed (exit {proc.returncode}):\n{proc.stderr}\n")
        raise SystemExit(2)
    return parse_importtime(proc.stderr)


def breakdown(setup: Setup, functions: list[Target], runs: int, top: int) -> None:
    baseline = baseline_target()
    importtime_run(setup, baseline)  # warm the bytecode cache
    for fn in functions:
        importtime_run(setup, fn)
    if setup.bytecode == "as-deployed":
        setup = setup.strip_bytecode()
    base_runs: list[dict[str, ImportLine]] = []
    fn_runs: dict[str, list[dict[str, ImportLine]]] = defaultdict(list)
    for _ in range(runs):
        base_runs.append(importtime_run(setup, baseline))
        for fn in functions:
            fn_runs[fn.label].append(importtime_run(setup, fn))

    base_modules = set().union(*(r.keys() for r in base_runs))
    base_self = statistics.median(sum(m.self_us for m in r.values()) for r in base_runs) / 1000
    print(f"-X importtime, median of {runs} runs (importtime itself inflates every figure; "
          f"compare modules with each other, not with the ratio table)\n")
    for fn in functions:
        runs_ = fn_runs[fn.label]
        extra = sorted(set().union(*(r.keys() for r in runs_)) - base_modules)

        def med(name: str, attr: str, runs_: list[dict[str, ImportLine]] = runs_) -> float:
            return float(statistics.median(getattr(r[name], attr) for r in runs_ if name in r)) / 1000

        total_self = statistics.median(sum(m.self_us for m in r.values()) for r in runs_) / 1000
        extra_self = statistics.median(sum(r[n].self_us for n in extra if n in r) for r in runs_) / 1000
        print(f"## {fn.label}: `import {fn.module}` beyond `import {BASELINE_MODULE}`\n")
        print(f"self time of every module: {total_self:.1f} ms (`import {BASELINE_MODULE}` alone: {base_self:.1f} ms); "
              f"of the {len(extra)} modules {BASELINE_MODULE} does not import: {extra_self:.1f} ms\n")
        ranked = sorted(extra, key=lambda n: med(n, "cumulative_us"), reverse=True)[:top]
        parents = {n: runs_[-1][n].parent if n in runs_[-1] else "?" for n in ranked}
        print_table(["module", "cumulative ms", "self ms", "first imported by"],
                    [[n, f"{med(n, 'cumulative_us'):.1f}", f"{med(n, 'self_us'):.1f}", parents[n]]
                     for n in ranked])
        packages: dict[str, float] = defaultdict(float)
        for n in extra:
            packages[n.split(".")[0]] += med(n, "self_us")
        print(f"\nself time of those {len(extra)} modules by top-level package (top {top}):\n")
        grouped = sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:top]
        print_table(["package", "self ms"], [[p, f"{ms:.1f}"] for p, ms in grouped])
        print()


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="discarded rounds before measuring; the first one warms the bytecode cache")
    parser.add_argument("--site", choices=["lambda", "venv"], default="lambda",
                        help="packages visible to the children (default: what a deployed function has)")
    parser.add_argument("--bytecode", choices=["cached", "as-deployed"], default="cached",
                        help="cached for both sides (default), or as a bundle built without Python 3.14 ships")
    parser.add_argument("--trace-disabled", action="store_true",
                        help="set POWERTOOLS_TRACE_DISABLED=true (not what Lambda does; to see the Tracer's cost)")
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "reflex-bench",
                        help="bytecode cache and Lambda-like site (outside the checkout)")
    parser.add_argument("--breakdown", nargs="?", const="*", metavar="FUNCTION",
                        help="-X importtime breakdown for FUNCTION (every function if omitted)")
    parser.add_argument("--top", type=int, default=15, help="modules listed by --breakdown (default 15)")
    parser.add_argument("--enforce", action="store_true", help="exit 1 if a function misses the target")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 1:
        parser.error("--runs and --warmup must be at least 1 (the warm-up round warms the bytecode cache)")

    functions = discover_functions()
    if args.breakdown not in (None, "*"):
        functions = [f for f in functions if f.label == args.breakdown]
        if not functions:
            parser.error(f"no functions/{args.breakdown}/handler.py")
    if not functions:
        parser.error(f"no handlers found under {FUNCTIONS}/*/handler.py")

    setup = Setup(site=args.site, site_dir=build_lambda_site(args.cache_dir) if args.site == "lambda" else None,
                  pycache=args.cache_dir / f"pycache-{args.bytecode}", bytecode=args.bytecode,
                  region=args.region, trace_disabled=args.trace_disabled)

    if args.breakdown is not None:
        runs = min(args.runs, 5)
        describe(setup, f"-X importtime: 1 warm-up + {runs} runs per module set, interleaved")
        breakdown(setup, functions, runs=runs, top=args.top)
        return 0

    describe(setup, f"rounds: {args.warmup} warm-up (discarded) + {args.runs} measured, interleaved")
    samples = measure(setup, functions, args.runs, args.warmup)
    all_pass = report(samples, functions)
    print(f"\nratio = median handler import / median `import {BASELINE_MODULE}`, same run; "
          f"target <= {TARGET_RATIO}. Process wall = start-up + import + exit, timed by the parent.")
    print(f"after the run: {load_note(own=1.0)}")
    return 1 if args.enforce and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
