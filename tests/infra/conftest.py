"""Fixtures of the infrastructure tests: one synthesized dev stack per test session."""

from __future__ import annotations

import pytest
from synth_support import ROOT, Synthesized, synthesize


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize("dev", ROOT / "config", tmp_path_factory.mktemp("cdk-dev"))
