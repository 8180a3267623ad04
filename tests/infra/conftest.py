"""Fixtures of the infrastructure tests: one synthesized dev stack per test session."""

from __future__ import annotations

import pytest
from synth_support import ROOT, Synthesized, synthesize


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize("dev", ROOT / "config", tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize("prod", ROOT / "config", tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture(scope="session", params=["dev", "prod"])
def stage(request: pytest.FixtureRequest) -> Synthesized:
    """Each stage's synthesized stack in turn (config/dev.yaml, config/prod.yaml)."""
    return request.getfixturevalue(request.param)
