"""app.py validates the stage config before building anything; the asset carries that config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synth_support import ROOT, write_config

from reflex_core.config import ConfigError, load_config_file, parse_config

DEV_YAML = (ROOT / "config" / "dev.yaml").read_text(encoding="utf-8")
MIN_GT_MAX = DEV_YAML.replace("bounds: {min: 2, max: 40, max_step: 8}", "bounds: {min: 50, max: 40, max_step: 8}")
UNKNOWN_KEY = DEV_YAML.replace("evaluate_every_minutes: 1", "evaluate_every_minutes: 1\nevaluate_evrey_minutes: 5")


def _build(stage: str, config_dir: Path) -> None:
    import app as reflex_app

    reflex_app.build_app(stage, config_dir, context={"aws:cdk:bundling-stacks": []})


def test_bounds_min_above_max_names_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "dev", MIN_GT_MAX)
    with pytest.raises(ConfigError) as err:
        _build("dev", tmp_path)
    assert str(path) in str(err.value)
    assert "scaling.0.bounds" in str(err.value)
    assert "min (50) is greater than max (40)" in str(err.value)


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "dev", UNKNOWN_KEY)
    with pytest.raises(ConfigError) as err:
        _build("dev", tmp_path)
    assert str(path) in str(err.value)
    assert "evaluate_evrey_minutes" in str(err.value)


def test_stage_must_match_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "staging", DEV_YAML)
    with pytest.raises(ConfigError) as err:
        _build("staging", tmp_path)
    assert str(path) in str(err.value) and "stage: is 'dev' but the file is for stage 'staging'" in str(err.value)


def test_missing_stage_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no config file"):
        _build("nope", tmp_path)


def test_custom_event_on_reflex_own_source_is_rejected(tmp_path: Path) -> None:
    # The functions publish their decisions with source reflex.<stage>: a rule on it would loop.
    path = write_config(tmp_path, "dev", DEV_YAML.replace("{source: app.ops,", "{source: reflex.dev,", 1))
    with pytest.raises(ConfigError) as err:
        _build("dev", tmp_path)
    assert str(path) in str(err.value) and "scaling.0.on_events.0.source" in str(err.value)


@pytest.mark.slow
def test_cdk_app_exits_1_with_the_message_on_stderr(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config", "broken", MIN_GT_MAX.replace("stage: dev", "stage: broken"))
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out"),
           "CDK_CONTEXT_JSON": json.dumps({"stage": "broken", "config_dir": str(tmp_path / "config")})}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert f"error: {path}: invalid Reflex config" in result.stderr
    assert "scaling.0.bounds: Value error, min (50) is greater than max (40)" in result.stderr
    assert not list((tmp_path / "out").glob("*.template.json"))


def test_bundled_config_round_trips_through_the_runtime_loader(tmp_path: Path) -> None:
    from reflex_constructs.functions_asset import CONFIG_FILE_NAME, config_json

    config = load_config_file(ROOT / "config" / "dev.yaml")
    bundled = tmp_path / CONFIG_FILE_NAME
    bundled.write_text(config_json(config), encoding="utf-8")
    assert load_config_file(bundled) == config  # the function loads JSON with the same models
    assert parse_config(json.loads(config_json(config)), "x") == config


def test_asset_hash_changes_with_the_config_and_the_sources(tmp_path: Path) -> None:
    import shutil

    from reflex_constructs.functions_asset import FunctionsAssetProps, asset_hash

    config = load_config_file(ROOT / "config" / "dev.yaml")
    sources = tmp_path / "functions"
    shutil.copytree(ROOT / "functions", sources, ignore=shutil.ignore_patterns("__pycache__"))
    props = FunctionsAssetProps(source_dir=sources, requirements_file=ROOT / "requirements.txt", config=config)
    base = asset_hash(props)
    assert asset_hash(props) == base
    changed = config.model_copy(update={"evaluate_every_minutes": 5})
    assert asset_hash(FunctionsAssetProps(sources, ROOT / "requirements.txt", changed)) != base
    (sources / "scaler" / "__pycache__").mkdir(exist_ok=True)
    (sources / "scaler" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"ignored")
    assert asset_hash(props) == base  # bytecode is not part of the asset
    (sources / "scaler" / "handler.py").write_text("# changed\n", encoding="utf-8")
    assert asset_hash(props) != base


def test_dependency_closure_leaves_out_the_runtime_sdk() -> None:
    from reflex_constructs.functions_asset import runtime_closure

    def item(name: str, version: str, requires: list[str], requested: bool = False,
             extras: list[str] | None = None) -> dict:
        return {"metadata": {"name": name, "version": version, "requires_dist": requires},
                "requested": requested, "requested_extras": extras}

    report = [
        item("aws-lambda-powertools", "3.37.0", ["jmespath<2,>=1.0.1", "typing-extensions>=4.11.0",
                                                 'aws-xray-sdk<3,>=2.8.0; extra == "tracer"',
                                                 'boto3<2,>=1.34.32; extra == "aws-sdk"'],
             requested=True, extras=["tracer"]),
        item("aws-xray-sdk", "2.15.0", ["botocore>=1.11.3", "wrapt"]),
        item("botocore", "1.44.8", ["jmespath<2.0.0,>=0.7.1", "python-dateutil<3,>=2.1", "urllib3!=2.2.0,<3"]),
        item("python-dateutil", "2.9.0", ["six>=1.5"]),
        item("six", "1.17.0", []),
        item("urllib3", "2.8.0", []),
        item("jmespath", "1.1.0", []),
        item("wrapt", "2.5.2", []),
        item("typing_extensions", "4.16.0", []),
        item("exceptiongroup", "1.0", []),
        item("pydantic", "2.13.4", ["typing-extensions>=4.14.1", 'exceptiongroup; python_version < "3.11"'],
             requested=True),
    ]
    assert runtime_closure(report) == [
        "aws-lambda-powertools==3.37.0", "aws-xray-sdk==2.15.0", "jmespath==1.1.0", "pydantic==2.13.4",
        "typing_extensions==4.16.0", "wrapt==2.5.2"]
