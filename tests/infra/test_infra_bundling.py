"""The local (Docker-free) bundler builds a Lambda package for python3.14 on arm64."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_support import ROOT

from reflex_core.config import load_config_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reflex_constructs.functions_asset import FunctionsAssetProps, LocalPipBundling

    out = tmp_path_factory.mktemp("asset")
    props = FunctionsAssetProps(source_dir=ROOT / "functions", requirements_file=ROOT / "requirements.txt",
                                config=load_config_file(ROOT / "config" / "dev.yaml"))
    assert LocalPipBundling(props).try_bundle(str(out)) is True
    return out


def test_bundle_has_the_sources_and_the_validated_config(bundle: Path) -> None:
    assert (bundle / "scaler" / "handler.py").is_file()
    assert (bundle / "reflex_core" / "pipeline.py").is_file()
    assert load_config_file(bundle / "reflex_config.json") == load_config_file(ROOT / "config" / "dev.yaml")
    assert not list(bundle.rglob("*.pyc"))


def test_native_wheels_are_for_cpython_314_on_aarch64(bundle: Path) -> None:
    (core,) = (bundle / "pydantic_core").glob("_pydantic_core*.so")
    assert core.name == "_pydantic_core.cpython-314-aarch64-linux-gnu.so"
    assert core.read_bytes()[18:20] == b"\xb7\x00"  # ELF e_machine EM_AARCH64
    assert (bundle / "aws_lambda_powertools").is_dir() and (bundle / "aws_xray_sdk").is_dir()


def test_runtime_provided_sdk_is_not_bundled(bundle: Path) -> None:
    for name in ("boto3", "botocore", "s3transfer", "urllib3", "dateutil"):
        assert not (bundle / name).exists(), name
