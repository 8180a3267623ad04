"""CDK app: `npx cdk synth -c stage=dev` validates `config/dev.yaml` and builds the stack `Reflex-dev`.

Context: `stage` (default "dev"), `config_dir` (default `config/`). A config that does not validate stops
the synth with exit code 1 and a message naming the file and every bad field. cdk-nag (AwsSolutions) runs
as a validation plugin: an unacknowledged finding fails the synth (report: cdk.out/validation-report.json).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
for _path in (ROOT / "constructs", ROOT / "functions"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from reflex_constructs import ReflexStack, ReflexStackProps  # noqa: E402
from reflex_core.config import ConfigError, ReflexConfig, load_config_file  # noqa: E402

DEFAULT_STAGE = "dev"
CONFIG_DIR = ROOT / "config"
FUNCTIONS_DIR = ROOT / "functions"
REQUIREMENTS_FILE = ROOT / "requirements.txt"


def load_stage_config(stage: str, config_dir: Path = CONFIG_DIR) -> ReflexConfig:
    path = Path(config_dir) / f"{stage}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no config file for stage {stage!r}")
    config = load_config_file(path)
    if config.stage != stage:
        raise ConfigError(f"{path}: invalid Reflex config\n  stage: is {config.stage!r} but the file is for "
                          f"stage {stage!r}")
    return config


def build_app(stage: str | None = None, config_dir: Path | None = None, *,
              context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """The whole app; raises `ConfigError` (message names the file and field) on a bad config."""
    app = cdk.App(context=context, outdir=outdir)
    stage = stage or app.node.try_get_context("stage") or DEFAULT_STAGE
    config_dir = Path(config_dir or app.node.try_get_context("config_dir") or CONFIG_DIR)
    config = load_stage_config(stage, config_dir)
    source = config_dir / f"{stage}.yaml"
    try:
        ReflexStack(
            app, f"Reflex-{stage}",
            ReflexStackProps(config=config, functions_dir=FUNCTIONS_DIR, requirements_file=REQUIREMENTS_FILE),
            env=cdk.Environment(account=config.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
                                region=config.region or os.environ.get("CDK_DEFAULT_REGION")),
            description=f"Reflex event-driven control plane ({stage})",
        )
    except ConfigError as err:
        # Raised by a construct that checks the config against the infrastructure (not by the model).
        raise ConfigError(f"{source}: invalid Reflex config\n  {err}") from None
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> int:
    try:
        app = build_app()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
