"""Write the JSON Schema of the stage config, for editor autocompletion of `config/<stage>.yaml`.

Usage: `python -m simulator.export_schema docs/config.schema.json` (what `make schema` runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from reflex_core.config import json_schema  # noqa: E402


def render_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m simulator.export_schema PATH", file=sys.stderr)
        return 2
    path = Path(args[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
