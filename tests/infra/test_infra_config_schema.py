"""docs/config.schema.json is generated from the config models and accepts the shipped configs."""

from __future__ import annotations

import json

import pytest
import yaml
from synth_support import ROOT

from simulator.export_schema import main, render_schema

SCHEMA = ROOT / "docs" / "config.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == render_schema(), "run `make schema`"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_shipped_configs_validate_against_the_schema(stage: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    config = yaml.safe_load((ROOT / "config" / f"{stage}.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(config, json.loads(SCHEMA.read_text(encoding="utf-8")))


def test_export_writes_the_file(tmp_path) -> None:
    out = tmp_path / "nested" / "schema.json"
    assert main([str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["title"] == "Reflex stage configuration"
    assert main([]) == 2
