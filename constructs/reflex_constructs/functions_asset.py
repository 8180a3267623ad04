"""The one Lambda code asset every reaction runs: `functions/`, its dependencies, and the stage config.

Bundled locally (no Docker): `functions/` is copied, the dependencies in `requirements.txt` are installed
as manylinux2014 aarch64 wheels for CPython 3.14 (the functions run on `PYTHON_3_14`, `ARM_64`), and the
validated stage config is written as `reflex_config.json`, the file `RuntimeSettings.config_file` names.

The AWS SDK (boto3, botocore, s3transfer) is provided by the Lambda runtime and is not bundled: a second
botocore in the package would shadow the runtime's, mismatch its boto3 and add ~25 MB to every cold start.
`aws-xray-sdk` (pulled in by `aws-lambda-powertools[tracer]`) depends on botocore, so the dependency set
is resolved first and installed without the SDK and whatever is needed only by it.

Bytecode: `/var/task` is read-only, so whatever the package does not ship compiled, Python compiles again at
every cold start (about 0.2 to 0.3 s for `functions/` and the bundled packages, docs/benchmarks.md). When a
Python 3.14 interpreter is available at bundling time (`REFLEX_BYTECODE_PYTHON`, else `python3.14` on PATH),
the package is compiled with it (`compileall --invalidation-mode unchecked-hash`: valid whatever the files'
mtimes, never re-checked, right for an immutable package). Without one, the package ships sources only and
the synth says so; nothing else changes. Bytecode from any other version would be ignored by the runtime.

The asset hash is custom: the sources, `requirements.txt`, the config JSON and the bundling recipe
(including whether bytecode is compiled, and by which interpreter version). A config change therefore changes
the asset and redeploys the functions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from reflex_core.config import ReflexConfig

CONFIG_FILE_NAME = "reflex_config.json"
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})
TARGET_PLATFORM = "manylinux2014_aarch64"
TARGET_PYTHON = "3.14"
# Environment markers of the target (python3.14 on Amazon Linux 2023, arm64), not of this machine.
TARGET_MARKERS = {
    "python_version": TARGET_PYTHON,
    "python_full_version": f"{TARGET_PYTHON}.0",
    "implementation_name": "cpython",
    "implementation_version": f"{TARGET_PYTHON}.0",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
    "platform_release": "",
    "platform_version": "",
}
_IGNORED_NAMES = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")
_IGNORED_SUFFIXES = (".pyc", ".pyo")
# Part of the asset hash: changing how the asset is built must also redeploy it.
_RECIPE = f"pip --platform {TARGET_PLATFORM} --python-version {TARGET_PYTHON} cp; sdk={sorted(RUNTIME_PROVIDED)}; v1"
BYTECODE_PYTHON_ENV = "REFLEX_BYTECODE_PYTHON"


class BytecodeCompilerError(RuntimeError):
    """`REFLEX_BYTECODE_PYTHON` names something that is not a Python of the target version."""


def bytecode_python(target: str = TARGET_PYTHON) -> tuple[str, str] | None:
    """(interpreter, its full version) that compiles the package, or None when there is none of `target`.

    `REFLEX_BYTECODE_PYTHON` must be a Python of the target version (an error otherwise: the deployer asked
    for it); without it, `python<target>` on PATH is used when there is one.
    """
    explicit = os.environ.get(BYTECODE_PYTHON_ENV, "").strip()
    candidate = explicit or shutil.which(f"python{target}")
    if not candidate:
        return None
    reported = _interpreter_version(candidate)
    minor, _, full = reported.partition(" ")
    if minor != target:
        if explicit:
            raise BytecodeCompilerError(f"{BYTECODE_PYTHON_ENV}={explicit} is not a Python {target} "
                                        f"(it reports {reported!r})")
        return None
    return candidate, full


@functools.cache
def _interpreter_version(python: str) -> str:
    """`<major>.<minor> <full version>` as `python` reports it (or what it printed when it failed). Asked once
    per interpreter and process: both the asset hash and the bundler need it."""
    probe = subprocess.run([python, "-c", "import sys; print('%d.%d %s' % (*sys.version_info[:2], "
                            "sys.version.split()[0]))"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return probe.stderr.strip() or f"exit {probe.returncode}"
    return probe.stdout.strip()


def compile_bytecode(package_dir: Path, python: str) -> int:
    """Compile every module of the package with `python`; returns how many .pyc files were written."""
    cmd = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(package_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the Lambda asset failed: {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
    return sum(1 for _ in package_dir.rglob("*.pyc"))


# --------------------------------------------------------------------------- where the package is built

BUNDLING_ENV = "REFLEX_BUNDLING"  # auto (default) | docker | local
BundlingKind = Literal["docker", "local-python", "sources"]


@dataclass(frozen=True)
class BundlingChoice:
    """How the asset is built (CDK's convention): in the runtime's build image when Docker is available, else with a
    local Python of the runtime's version, else as sources (dependencies still installed, no bytecode)."""

    kind: BundlingKind
    compiler: tuple[str, str] | None  # (interpreter, version) for "local-python"
    reason: str


def choose_bundling(*, docker: bool, compiler: tuple[str, str] | None, requested: str = "auto") -> BundlingChoice:
    """The pure decision (tests/infra/test_infra_bundling.py). `requested` is `REFLEX_BUNDLING`."""
    if requested not in ("auto", "docker", "local"):
        raise ValueError(f"{BUNDLING_ENV}={requested!r}: expected auto, docker or local")
    if requested == "docker" and not docker:
        raise RuntimeError(f"{BUNDLING_ENV}=docker but Docker is not available (docker version failed)")
    if docker and requested != "local":
        return BundlingChoice("docker", None, f"Docker is available: bundling in {RUNTIME_IMAGE_NOTE}")
    if compiler is not None:
        return BundlingChoice("local-python", compiler, f"no Docker: bundling locally, compiled with Python "
                                                        f"{compiler[1]} ({compiler[0]})")
    return BundlingChoice("sources", None, f"no Docker and no Python {TARGET_PYTHON} (put python{TARGET_PYTHON} on "
                                           f"PATH or set {BYTECODE_PYTHON_ENV}): the package ships without bytecode, "
                                           "so every cold start compiles it (about 0.2-0.3 s)")


RUNTIME_IMAGE_NOTE = f"the python{TARGET_PYTHON} runtime's build image"


def docker_available(run: Any = subprocess.run) -> bool:
    """Docker CLI present and its daemon answering (what CDK needs to run a bundling image)."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                    check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


@functools.cache
def _docker() -> bool:
    """Asked once per process (the asset hash, the local bundler and the Docker options all need it)."""
    return docker_available()


def bundling_choice() -> BundlingChoice:
    requested = os.environ.get(BUNDLING_ENV, "auto").strip() or "auto"
    docker = requested != "local" and _docker()
    return choose_bundling(docker=docker, compiler=bytecode_python(), requested=requested)


def _recipe() -> str:
    choice = bundling_choice()
    if choice.kind == "docker":
        return f"{_RECIPE}; bytecode=docker:{lambda_.Runtime.PYTHON_3_14.name}"
    return f"{_RECIPE}; bytecode={choice.compiler[1] if choice.compiler else 'none'}"


@dataclass(frozen=True)
class FunctionsAssetProps:
    source_dir: Path
    requirements_file: Path
    config: ReflexConfig
    # False when the stack is not bundled (`cdk synth` of other stacks, the infra tests): nothing is resolved.
    bundling_required: bool = True


def function_code(props: FunctionsAssetProps) -> lambda_.Code:
    """The `lambda.Code` for every reaction of a stage. Build it once per stack and share it:
    all reactions then deploy the same S3 object."""
    return lambda_.Code.from_asset(
        str(props.source_dir),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash(props),
        exclude=[f"**/{name}" for name in _IGNORED_NAMES] + [f"**/*{s}" for s in _IGNORED_SUFFIXES],
        bundling=BundlingOptions(
            # Local bundling declines only when Docker is chosen (bundling_choice); a failing local install raises,
            # so it never silently falls back to Docker.
            image=lambda_.Runtime.PYTHON_3_14.bundling_image,
            local=LocalPipBundling(props),
            **docker_bundling(props),
        ),
    )


DOCKER_SCRIPT = """set -eu
tar -C /asset-input --exclude=__pycache__ --exclude='*.pyc' --exclude=.mypy_cache --exclude=.pytest_cache \\
    --exclude=.ruff_cache -cf - . | tar -C /asset-output -xf -
if [ -n "$REFLEX_PINS" ]; then
  pip install --disable-pip-version-check --no-input --quiet --no-deps --no-compile --target /asset-output \\
    --platform manylinux2014_aarch64 --only-binary=:all: --implementation cp $REFLEX_PINS
fi
printf '%s' "$REFLEX_CONFIG_JSON" > /asset-output/reflex_config.json
python -m compileall -q -j 0 --invalidation-mode unchecked-hash /asset-output
"""


def docker_bundling(props: FunctionsAssetProps) -> dict[str, Any]:
    """The Docker half of the bundling options: only when Docker is the choice (the pins are resolved on this
    machine, for the target platform, so the image installs exactly what local bundling would)."""
    choice = bundling_choice()
    if choice.kind != "docker" or not props.bundling_required:
        return {}
    sys.stderr.write(f"reflex: {choice.reason}\n")
    return {
        "command": ["bash", "-c", DOCKER_SCRIPT],
        "environment": {"REFLEX_PINS": " ".join(LocalPipBundling(props).resolve()),
                        "REFLEX_CONFIG_JSON": config_json(props.config)},
    }


def config_json(config: ReflexConfig) -> str:
    return config.model_dump_json(indent=2) + "\n"


def asset_hash(props: FunctionsAssetProps) -> str:
    digest = hashlib.sha256(_recipe().encode())
    for path in _source_files(props.source_dir):
        digest.update(b"\0file\0" + path.relative_to(props.source_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    digest.update(b"\0requirements\0" + props.requirements_file.read_bytes())
    digest.update(b"\0config\0" + config_json(props.config).encode())
    return digest.hexdigest()


def _source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not _ignored(rel):
            yield path


def _ignored(rel: Path) -> bool:
    return any(part in _IGNORED_NAMES for part in rel.parts) or rel.suffix in _IGNORED_SUFFIXES


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """Builds the asset on this machine with pip (cross-platform wheels), so no Docker is needed."""

    def __init__(self, props: FunctionsAssetProps) -> None:
        self._props = props

    def try_bundle(self, output_dir: str, options: Any = None, **_kwargs: Any) -> bool:
        if bundling_choice().kind == "docker":
            return False  # CDK then bundles in the runtime's build image (docker_bundling)
        out = Path(output_dir)
        self._copy_sources(out)
        self._install_dependencies(out)
        (out / CONFIG_FILE_NAME).write_text(config_json(self._props.config), encoding="utf-8")
        self._compile(out)
        return True

    def _compile(self, out: Path) -> None:
        choice = bundling_choice()
        sys.stderr.write(f"reflex: {choice.reason}\n")
        if choice.compiler is None:
            return
        compile_bytecode(out, choice.compiler[0])

    def _copy_sources(self, out: Path) -> None:
        for path in _source_files(self._props.source_dir):
            dest = out / path.relative_to(self._props.source_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)

    def _install_dependencies(self, out: Path) -> None:
        pins = self.resolve()
        if pins:
            _pip("install", "--no-deps", "--no-compile", "--target", str(out), *_platform_args(), *pins)

    def resolve(self) -> list[str]:
        """`name==version` for every dependency the functions need that the runtime does not provide."""
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            # pip accepts the platform options only with --target, even for a dry run.
            _pip("install", "--dry-run", "--ignore-installed", "--report", str(report),
                 "--target", str(Path(tmp) / "unused"), *_platform_args(), "-r", str(self._props.requirements_file))
            data = json.loads(report.read_text(encoding="utf-8"))
        return runtime_closure(data["install"])


def runtime_closure(install: list[dict[str, Any]]) -> list[str]:
    """Walk the resolved dependency graph from the requested packages, skipping the runtime-provided
    SDK: a package reachable only through boto3/botocore (urllib3, python-dateutil, ...) is left out."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    items: dict[str, dict[str, Any]] = {str(canonicalize_name(i["metadata"]["name"])): i for i in install}
    wanted: dict[str, set[str]] = {}
    queue: list[tuple[str, frozenset[str]]] = [
        (name, frozenset(i.get("requested_extras") or ())) for name, i in items.items() if i.get("requested")
    ]
    while queue:
        name, extras = queue.pop()
        if name in RUNTIME_PROVIDED or name not in items:
            continue
        seen = wanted.get(name)
        if seen is not None and extras <= seen:
            continue
        wanted[name] = (seen or set()) | extras
        for spec in items[name]["metadata"].get("requires_dist") or []:
            req = Requirement(spec)
            if req.marker is None or any(
                req.marker.evaluate({**TARGET_MARKERS, "extra": e}) for e in (wanted[name] or {""})
            ):
                queue.append((str(canonicalize_name(req.name)), frozenset(req.extras)))
    return sorted(f"{items[n]['metadata']['name']}=={items[n]['metadata']['version']}" for n in wanted)


def _platform_args() -> list[str]:
    return ["--platform", TARGET_PLATFORM, "--only-binary=:all:", "--python-version", TARGET_PYTHON,
            "--implementation", "cp"]


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"bundling the Lambda asset failed: {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
