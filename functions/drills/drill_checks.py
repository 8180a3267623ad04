"""The validation checks of a drill: each check's value on the restored copy (and, when its expectation compares,
on production, read only), judged against its expectation; and RTO / RPO against the objectives.

The same code judges every drill: one that AWS Backup restore testing ran (values read through the RDS Data API,
DynamoDB and S3), an on-demand one, and the local drill mode against PostgreSQL (values read with psycopg).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from reflex_core.recovery_config import (
    AtLeast,
    EqualsValue,
    FreshWithinRpo,
    ProtectedResource,
    ValidationCheck,
    WithinPercentOfProduction,
)


class CheckSource(Protocol):
    """Reads one check's value from a copy (`where` = "restored") or from production ("production")."""

    def value(self, check: ValidationCheck, where: str) -> Any: ...


@dataclass
class CheckResult:
    name: str
    passed: bool
    value: Any = None
    production: Any = None
    detail: str = ""


@dataclass
class DrillReport:
    resource: str
    kind: str
    restore_job_id: str
    passed: bool
    isolated: bool
    checks: list[CheckResult] = field(default_factory=list)
    restore_s: float = 0.0
    validation_s: float = 0.0
    rto_s: float = 0.0
    rpo_s: float | None = None
    rto_objective_s: int = 0
    rpo_objective_s: int = 0
    rto_met: bool = True
    rpo_met: bool = True
    detail: str = ""

    @property
    def objectives_met(self) -> bool:
        return self.rto_met and self.rpo_met

    def summary(self) -> str:
        checks = ", ".join(f"{c.name} {'ok' if c.passed else 'FAILED'}" for c in self.checks) or "no checks"
        rpo = "unknown" if self.rpo_s is None else f"{self.rpo_s:.0f}s"
        return (f"{self.resource}: validation {'passed' if self.passed else 'FAILED'} ({checks}); "
                f"RTO {self.rto_s:.0f}s / {self.rto_objective_s}s {'met' if self.rto_met else 'MISSED'}; "
                f"RPO {rpo} / {self.rpo_objective_s}s {'met' if self.rpo_met else 'MISSED'}"
                + (f"; {self.detail}" if self.detail else ""))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"objectives_met": self.objectives_met}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} is {value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}, not a number") from None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, str):
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"value is {value!r}, not a timestamp")
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def judge(check: ValidationCheck, source: CheckSource, resource: ProtectedResource,
          recovery_point_time: datetime | None) -> CheckResult:
    """One check: read its value and compare; a check that cannot be read fails with the reason."""
    try:
        value = source.value(check, "restored")
        expect = check.expect
        if isinstance(expect, WithinPercentOfProduction):
            production = source.value(check, "production")
            restored_n, production_n = _number(value, "restored value"), _number(production, "production value")
            if production_n == 0:
                passed = restored_n == 0
            else:
                passed = abs(restored_n - production_n) / abs(production_n) * 100 <= expect.percent
            return CheckResult(check.name, passed, value, production,
                               f"{restored_n:g} vs production {production_n:g} (within {expect.percent:g} %)")
        if isinstance(expect, FreshWithinRpo):
            newest = _timestamp(value)
            if recovery_point_time is None:
                return CheckResult(check.name, False, str(value), detail="the recovery point's time is unknown")
            lag = (recovery_point_time - newest).total_seconds()
            return CheckResult(check.name, lag <= resource.objectives.rpo_s, newest.isoformat(),
                               detail=f"newest data {lag:.0f}s before the recovery point "
                                      f"(RPO {resource.objectives.rpo_s}s)")
        if isinstance(expect, AtLeast):
            n = _number(value, "value")
            return CheckResult(check.name, n >= expect.value, value, detail=f"{n:g} >= {expect.value:g}")
        assert isinstance(expect, EqualsValue)
        passed = str(value) == str(expect.value) if isinstance(expect.value, str) else \
            _number(value, "value") == expect.value
        return CheckResult(check.name, passed, value, detail=f"expected {expect.value!r}")
    except Exception as err:  # noqa: BLE001 - a check that cannot run is a failed check, with its reason
        return CheckResult(check.name, False, detail=f"{type(err).__name__}: {str(err)[:300]}")


def evaluate(resource: ProtectedResource, source: CheckSource, *, restore_job_id: str, isolated: bool,
             isolation_problems: list[str], restore_started: datetime, restore_completed: datetime,
             recovery_point_time: datetime | None, validation_started: datetime,
             clock_now: Any) -> DrillReport:
    """Run every check (none when the copy is not isolated) and measure RTO and RPO.

    RTO: the restore job's duration plus the validation's. RPO: how old the restored data was when the drill
    began (the restore's start minus the recovery point's time): what a disaster at that moment would lose.
    """
    checks: list[CheckResult] = []
    if isolated:
        checks = [judge(c, source, resource, recovery_point_time) for c in resource.checks]
    validation_done: datetime = clock_now()
    restore_s = max((restore_completed - restore_started).total_seconds(), 0.0)
    validation_s = max((validation_done - validation_started).total_seconds(), 0.0)
    rto = restore_s + validation_s
    rpo = None if recovery_point_time is None else max((restore_started - recovery_point_time).total_seconds(), 0.0)
    objectives = resource.objectives
    passed = isolated and all(c.passed for c in checks)
    return DrillReport(
        resource=resource.name, kind=resource.kind, restore_job_id=restore_job_id, passed=passed, isolated=isolated,
        checks=checks, restore_s=restore_s, validation_s=validation_s, rto_s=rto, rpo_s=rpo,
        rto_objective_s=objectives.rto_s, rpo_objective_s=objectives.rpo_s, rto_met=rto <= objectives.rto_s,
        rpo_met=rpo is not None and rpo <= objectives.rpo_s,
        detail="not isolated: " + "; ".join(isolation_problems) if not isolated else "")
