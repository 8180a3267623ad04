"""Environment of a deployed function, validated once at cold start (names set by the CDK constructs)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "REFLEX_"


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str = Field(min_length=1)
    reaction: str = Field(min_length=1)
    config_file: str = "reflex_config.json"
    audit_table: str = Field(min_length=1)
    state_table: str = Field(min_length=1)
    idempotency_table: str = Field(min_length=1)
    notify_topic_arn: str = ""
    event_bus_name: str = "default"
    kill_switch_prefix: str = Field(min_length=1)
    dead_letter_queue_url: str = ""
    # The Step Functions state machine a reaction drives (the promoter's promotion workflow); empty otherwise.
    workflow_arn: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if environ is None else environ
        values = {
            name: env[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            missing = ", ".join(ENV_PREFIX + str(e["loc"][0]).upper() for e in err.errors())
            raise RuntimeError(f"function environment is incomplete or invalid: {missing}") from None

    def config_path(self) -> Path:
        path = Path(self.config_file)
        if not path.is_absolute():
            path = Path(os.environ.get("LAMBDA_TASK_ROOT", Path(__file__).resolve().parent.parent)) / path
        return path

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + k.upper(): str(v) for k, v in self.model_dump().items()}
