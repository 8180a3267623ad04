"""`python -m simulator SCENARIO [--config PATH] [--out DIR] [--check] [--all]`

Plays a scenario through the real scaler handler against moto with a virtual clock, prints the
timeline and a summary, and writes `<out>/<name>.audit.json` and `<out>/<name>.timeline.json`.
Exit status: 0 done (or every expectation met with --check), 1 an expectation failed (with --check),
2 the scenario or the config is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description="Replay a scenario through Reflex's real handlers on this machine.")
    parser.add_argument("scenario", help="scenario YAML file (see docs/simulator.md)")
    parser.add_argument("--config", help="Reflex config to run against (overrides the scenario's `config`)")
    parser.add_argument("--out", default="out", help="directory for the audit and timeline JSON (default: out)")
    parser.add_argument("--check", action="store_true", help="exit 1 when an expectation fails")
    parser.add_argument("--all", action="store_true", dest="show_all",
                        help="show every periodic evaluation instead of collapsing repeats")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    # Before anything imports Powertools: no X-Ray, no EMF lines, warnings only.
    from simulator.scenario import prepare_environment

    prepare_environment()

    from simulator.invalidation_scenario import is_invalidation_scenario

    if is_invalidation_scenario(args.scenario):  # `reaction: invalidator` (see simulator/invalidation_scenario.py)
        from simulator.invalidation_scenario import main as run_invalidation

        return run_invalidation(args.scenario, args.config, args.out, args.check)

    from simulator.drill_scenario import is_drill_scenario

    if is_drill_scenario(args.scenario):  # `reaction: drills` (see simulator/drill_scenario.py)
        from simulator.drill_scenario import main as run_drills

        return run_drills(args.scenario, args.config, args.out, args.check)

    from simulator.shard_scenario import is_shard_scenario

    if is_shard_scenario(args.scenario):  # `reaction: shards` (see simulator/shard_scenario.py)
        from simulator.shard_scenario import run as run_shards

        return run_shards(args.scenario, args.out, args.check)

    from reflex_core.config import ConfigError
    from simulator.scenario import ScenarioError, run_file
    from simulator.timeline import render

    try:
        result = run_file(args.scenario, args.config)
    except (ScenarioError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(render(result, show_all=args.show_all))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = result.scenario.name
    files = {
        out / f"{name}.audit.json": result.audit,
        out / f"{name}.timeline.json": result.timeline_json(),
    }
    for path, data in files.items():
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    log = out / f"{name}.handler.log"
    log.write_text(result.handler_output, encoding="utf-8")
    print(f"Wrote {', '.join(str(p) for p in [*files, log])}")

    if args.check and not result.passed:
        print(f"--check: {len(result.failed_checks)} expectation(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
