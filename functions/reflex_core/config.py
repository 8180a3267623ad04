"""The whole stage config (`config/<stage>.yaml`): every section, as `app.py` validates it at synth time.

The models live beside the part they describe: the common part in config_base.py, each reaction's
section in scaling_config.py, promotion_config.py and invalidation_config.py. `ReflexConfig` is all of
them together; `app.py` validates `config/<stage>.yaml` with it and hands every function the validated
JSON, and each function validates again at cold start, with the same models, the sections it uses
(config_base.py explains). The simulator and tests use `ReflexConfig` too: it is every function's view.

Handlers do not import this module (it would build every reaction's models in every function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

from reflex_core.config_base import (
    AlarmMatch,
    AlarmTopic,
    ConfigError,
    EventMatch,
    Guardrails,
    Notify,
    RateLimit,
    StageConfig,
    StrictModel,
    format_validation_error,
    read_config_data,
    validate_config,
)
from reflex_core.database_config import DatabaseStageConfig
from reflex_core.invalidation_config import InvalidationStageConfig
from reflex_core.monitoring_config import MonitoringStageConfig
from reflex_core.promotion_config import PromotionStageConfig
from reflex_core.recovery_config import RecoveryStageConfig
from reflex_core.resharding_config import ReshardingStageConfig
from reflex_core.scaling_config import (
    AuroraReplicasTarget,
    AutoScalingGroupTarget,
    Bounds,
    EcsServiceTarget,
    Prewarm,
    ScaleIn,
    ScaleOut,
    ScalingPolicy,
    ScalingStageConfig,
    ScalingTarget,
    StepAdjustment,
)
from reflex_core.sharding_config import ShardingStageConfig

__all__ = [
    "AlarmMatch", "AlarmTopic", "AuroraReplicasTarget", "AutoScalingGroupTarget", "Bounds", "ConfigError",
    "EcsServiceTarget", "EventMatch", "Guardrails", "Notify", "Prewarm", "RateLimit", "ReflexConfig", "ScaleIn",
    "ScaleOut", "ScalingPolicy", "ScalingStageConfig", "ScalingTarget", "StageConfig", "StepAdjustment",
    "StrictModel", "format_validation_error", "json_schema", "load_config_file", "parse_config",
]


class ReflexConfig(InvalidationStageConfig, PromotionStageConfig, ShardingStageConfig, ReshardingStageConfig,
                   DatabaseStageConfig, RecoveryStageConfig, MonitoringStageConfig):
    """The whole stage config: the common part and every reaction's section, with every cross-check."""

    @model_validator(mode="after")
    def _database_shards_exist(self) -> ReflexConfig:
        """`databases.targets[].shard` names a shard of `sharding:` (the advisor's link to the moves)."""
        sets = {s.name: {sh.name for sh in s.shards} for s in (self.sharding.sets if self.sharding else [])}
        problems = []
        for i, db in enumerate(self.database_targets):
            if db.shard is None:
                continue
            set_name, shard = db.shard.split("/", 1)
            if shard not in sets.get(set_name, set()):
                known = ", ".join(f"{k}/{v}" for k, vs in sorted(sets.items()) for v in sorted(vs)) or "none"
                problems.append(f"databases.targets.{i}.shard: {db.shard!r} is not a shard of sharding.sets "
                                f"(known: {known})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _named_alarms_exist(self) -> ReflexConfig:
        """With a `monitoring:` section, every alarm a policy names exactly must be created by it or be
        declared in `monitoring.external_alarms` (a typo or a removed SLO would leave a policy deaf)."""
        if self.monitoring is None:
            return self
        known = set(self.monitoring.alarm_names(self.stage)) | set(self.monitoring.external_alarms)
        problems = [
            f"{path}.names: {name!r} is neither created by monitoring (an SLO, journey or resource alarm) nor "
            "declared in monitoring.external_alarms"
            for path, match in alarm_matches(self) for name in match.names if name not in known
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def alarm_matches(model: BaseModel, path: str = "") -> list[tuple[str, AlarmMatch]]:
    """Every `AlarmMatch` in the config with its field path (e.g. `scaling.0.scale_out.alarms`), whatever the
    section: a new reaction's alarm matches are checked without changing this function."""
    found: list[tuple[str, AlarmMatch]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, AlarmMatch):
            found.append((where, value))
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(getattr(value, field), f"{where}.{field}" if where else field)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}.{i}")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")

    walk(model, path)
    return found


def parse_config(data: Any, source: str) -> ReflexConfig:
    return validate_config(ReflexConfig, data, source)


def load_config_file(path: str | Path) -> ReflexConfig:
    """Load YAML (synth time, simulator) or JSON (the config a function ships with)."""
    return parse_config(read_config_data(path), str(path))


def json_schema() -> dict[str, Any]:
    schema = ReflexConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Reflex stage configuration"
    return schema
