"""The local (Docker-free) bundler builds a Lambda package for python3.14 on arm64."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from synth_support import ROOT

from reflex_core.config import load_config_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reflex_constructs.functions_asset import FunctionsAssetProps, LocalPipBundling

    out = tmp_path_factory.mktemp("asset")
    os.environ["REFLEX_BUNDLING"] = "local"  # this test is about the local bundler, Docker or not
    props = FunctionsAssetProps(source_dir=ROOT / "functions", requirements_file=ROOT / "requirements.txt",
                                config=load_config_file(ROOT / "config" / "dev.yaml"))
    try:
        assert LocalPipBundling(props).try_bundle(str(out)) is True
    finally:
        os.environ.pop("REFLEX_BUNDLING", None)
    return out


def test_bundle_has_the_sources_and_the_validated_config(bundle: Path) -> None:
    assert (bundle / "scaler" / "handler.py").is_file()
    assert (bundle / "reflex_core" / "pipeline.py").is_file()
    assert load_config_file(bundle / "reflex_config.json") == load_config_file(ROOT / "config" / "dev.yaml")


def test_bytecode_is_for_the_target_python_or_absent(bundle: Path) -> None:
    from reflex_constructs.functions_asset import bytecode_python

    pycs = list(bundle.rglob("*.pyc"))
    if bytecode_python() is None:  # this machine has no Python 3.14: sources only
        assert pycs == []
    else:
        assert pycs and all(".cpython-314." in p.name for p in pycs)
        assert (bundle / "scaler" / "__pycache__" / "handler.cpython-314.pyc").is_file()


def test_native_wheels_are_for_cpython_314_on_aarch64(bundle: Path) -> None:
    (core,) = (bundle / "pydantic_core").glob("_pydantic_core*.so")
    assert core.name == "_pydantic_core.cpython-314-aarch64-linux-gnu.so"
    assert core.read_bytes()[18:20] == b"\xb7\x00"  # ELF e_machine EM_AARCH64
    assert (bundle / "aws_lambda_powertools").is_dir() and (bundle / "aws_xray_sdk").is_dir()


def test_runtime_provided_sdk_is_not_bundled(bundle: Path) -> None:
    for name in ("boto3", "botocore", "s3transfer", "urllib3", "dateutil"):
        assert not (bundle / name).exists(), name


# ------------------------------------------------------------------ bytecode compiled for the target Python

_THIS = f"{sys.version_info.major}.{sys.version_info.minor}"


def test_an_explicit_compiler_of_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflex_constructs.functions_asset import BytecodeCompilerError, bytecode_python

    monkeypatch.setenv("REFLEX_BYTECODE_PYTHON", sys.executable)
    assert bytecode_python(_THIS) == (sys.executable, platform.python_version())
    with pytest.raises(BytecodeCompilerError, match=r"is not a Python 3\.99"):
        bytecode_python("3.99")


def test_without_a_compiler_of_the_target_version_there_is_none(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from reflex_constructs.functions_asset import bytecode_python

    monkeypatch.delenv("REFLEX_BYTECODE_PYTHON", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bytecode_python("3.14") is None


def test_compiled_modules_are_used_without_checking_the_source(tmp_path: Path) -> None:
    """unchecked-hash bytecode: valid whatever the mtimes in the zip, and the runtime never recompiles."""
    from reflex_constructs.functions_asset import compile_bytecode

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("ANSWER = 'compiled'\n")
    assert compile_bytecode(tmp_path, sys.executable) == 2
    pyc = pkg / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01  # hash-based, source never checked
    (pkg / "mod.py").write_text("ANSWER = 'source'\n")  # what the runtime would compile, were it to
    out = subprocess.run([sys.executable, "-c", "import pkg.mod; print(pkg.mod.ANSWER)"], cwd=tmp_path,
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPYCACHEPREFIX": ""})
    assert out.stdout.strip() == "compiled"


def test_the_asset_hash_says_whether_and_by_which_python_it_was_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflex_constructs import functions_asset
    from reflex_constructs.functions_asset import FunctionsAssetProps, asset_hash

    props = FunctionsAssetProps(source_dir=ROOT / "functions", requirements_file=ROOT / "requirements.txt",
                                config=load_config_file(ROOT / "config" / "dev.yaml"))
    hashes = set()
    monkeypatch.setattr(functions_asset, "_docker", lambda: False)
    for compiler in (None, ("/usr/bin/python3.14", "3.14.0"), ("/usr/bin/python3.14", "3.14.1")):
        monkeypatch.setattr(functions_asset, "bytecode_python", lambda c=compiler: c)
        hashes.add(asset_hash(props))
    monkeypatch.setattr(functions_asset, "_docker", lambda: True)  # built in the runtime's image
    hashes.add(asset_hash(props))
    assert len(hashes) == 4


# ------------------------------------------------------------------ where the package is built (CDK's convention)

PY314 = ("/usr/bin/python3.14", "3.14.0")


@pytest.mark.parametrize(("docker", "compiler", "requested", "kind"), [
    (True, PY314, "auto", "docker"),          # Docker first, as CDK does
    (True, None, "auto", "docker"),
    (False, PY314, "auto", "local-python"),   # else a local Python of the runtime's version
    (False, None, "auto", "sources"),         # else sources, and the synth says so
    (True, PY314, "local", "local-python"),   # REFLEX_BUNDLING=local: never Docker
    (True, None, "local", "sources"),
    (True, None, "docker", "docker"),
])
def test_bundling_choice_follows_cdk_convention(docker: bool, compiler: tuple[str, str] | None, requested: str,
                                                kind: str) -> None:
    from reflex_constructs.functions_asset import choose_bundling

    choice = choose_bundling(docker=docker, compiler=compiler, requested=requested)
    assert choice.kind == kind
    assert choice.compiler == (compiler if kind == "local-python" else None)
    if kind == "sources":
        assert "without bytecode" in choice.reason


def test_bundling_choice_refuses_docker_when_it_is_missing_and_unknown_requests() -> None:
    from reflex_constructs.functions_asset import choose_bundling

    with pytest.raises(RuntimeError, match="Docker is not available"):
        choose_bundling(docker=False, compiler=PY314, requested="docker")
    with pytest.raises(ValueError, match="expected auto, docker or local"):
        choose_bundling(docker=True, compiler=None, requested="podman")


def test_docker_counts_only_when_its_daemon_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from reflex_constructs.functions_asset import docker_available

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/docker")
    answered = subprocess.CompletedProcess([], 0, stdout="27.3.1\n", stderr="")
    no_daemon = subprocess.CompletedProcess([], 1, stdout="", stderr="Cannot connect to the Docker daemon")
    assert docker_available(run=lambda *a, **k: answered) is True
    assert docker_available(run=lambda *a, **k: no_daemon) is False
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert docker_available(run=lambda *a, **k: answered) is False


def test_docker_bundling_installs_the_resolved_pins_and_compiles_in_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflex_constructs import functions_asset
    from reflex_constructs.functions_asset import DOCKER_SCRIPT, FunctionsAssetProps, LocalPipBundling, docker_bundling

    props = FunctionsAssetProps(source_dir=ROOT / "functions", requirements_file=ROOT / "requirements.txt",
                                config=load_config_file(ROOT / "config" / "dev.yaml"))
    monkeypatch.setattr(functions_asset, "_docker", lambda: True)
    monkeypatch.setattr(LocalPipBundling, "resolve", lambda self: ["pydantic==2.13.4", "redis==8.1.0"])
    options = docker_bundling(props)
    assert options["command"] == ["bash", "-c", DOCKER_SCRIPT]
    assert options["environment"]["REFLEX_PINS"] == "pydantic==2.13.4 redis==8.1.0"
    assert load_config_file(ROOT / "config" / "dev.yaml").model_validate_json(
        options["environment"]["REFLEX_CONFIG_JSON"]) == props.config
    assert "compileall" in DOCKER_SCRIPT and "manylinux2014_aarch64" in DOCKER_SCRIPT
    # The local bundler then declines, so CDK runs the image; a stack that is not bundled resolves nothing.
    assert LocalPipBundling(props).try_bundle("/nonexistent") is False
    unbundled = FunctionsAssetProps(source_dir=props.source_dir, requirements_file=props.requirements_file,
                                    config=props.config, bundling_required=False)
    assert docker_bundling(unbundled) == {}
    monkeypatch.setattr(functions_asset, "_docker", lambda: False)
    assert docker_bundling(props) == {}
