"""The promoter's Step Functions calls (all of them): start, stop, complete a callback, read a status.

The state machine's ARN comes from the function's settings (`REFLEX_WORKFLOW_ARN`, set by the CDK
construct from the machine's fixed name, so the function and the machine do not depend on each other).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from reflex_core.aws_clients import AwsClients
from reflex_core.observability import logger

# Tokens that no longer wait: the execution ended or timed out, or the token was already used.
_GONE_TOKEN = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
_GONE_EXECUTION = frozenset({"ExecutionDoesNotExist"})


class TokenGone(RuntimeError):
    """The callback token no longer waits (its task timed out, or the execution ended)."""


class PromotionWorkflow:
    def __init__(self, clients: AwsClients, state_machine_arn: str) -> None:
        self._sfn = clients.stepfunctions
        self._arn = state_machine_arn

    def execution_arn(self, name: str) -> str:
        head, _, machine = self._arn.rpartition(":stateMachine:")
        return f"{head}:execution:{machine}:{name}"

    def start(self, name: str, state: dict[str, Any]) -> str:
        """Start the execution `name`; a second start of the same name is a no-op (same event)."""
        if not self._arn:
            raise RuntimeError("REFLEX_WORKFLOW_ARN is not set: the promoter cannot start its workflow")
        try:
            return str(self._sfn.start_execution(stateMachineArn=self._arn, name=name,
                                                 input=json.dumps(state, sort_keys=True))["executionArn"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            logger.info("execution already started", extra={"execution": name})
            return self.execution_arn(name)

    def stop(self, execution_arn: str, error: str, cause: str) -> bool:
        """Stop the execution if it still runs. Returns whether it was running."""
        if not execution_arn:
            return False
        try:
            if self.status(execution_arn) != "RUNNING":
                return False
            self._sfn.stop_execution(executionArn=execution_arn, error=error[:256], cause=cause[:32_000])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _GONE_EXECUTION:
                return False
            raise
        return True

    def status(self, execution_arn: str) -> str:
        try:
            return str(self._sfn.describe_execution(executionArn=execution_arn)["status"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _GONE_EXECUTION:
                return "MISSING"
            raise

    def succeed(self, token: str, output: dict[str, Any]) -> None:
        try:
            self._sfn.send_task_success(taskToken=token, output=json.dumps(output, sort_keys=True))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _GONE_TOKEN:
                raise TokenGone(str(err)) from None
            raise

    def fail(self, token: str, error: str, cause: str) -> None:
        try:
            self._sfn.send_task_failure(taskToken=token, error=error[:256], cause=cause[:32_000])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _GONE_TOKEN:
                raise
