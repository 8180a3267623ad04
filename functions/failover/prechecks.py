"""The pre-checks of a regional failover, read-only: run when it is asked for (`plan_failover`, `failover`,
`failback`) and again right before acting, after the approval (the world may have changed while waiting).

* switchover: primary -> secondary, SwitchoverGlobalCluster; refused unless both clusters are healthy and the lag
  is known and <= the RPO.
* failover: primary -> secondary, FailoverGlobalCluster(AllowDataLoss); refused unless the secondary is healthy;
  a lag above the RPO only with `accept_data_loss_s` >= the lag; an unknown lag only with `accept_data_loss_s` >=
  the RPO.
* failback: secondary -> original primary, SwitchoverGlobalCluster; refused unless the old primary is a healthy
  member again and the lag is steady (>= 3 datapoints in 5 minutes) and <= the RPO.

In every mode: the global cluster exists, no switchover or failover is under way, the writer is the cluster the
mode moves away from, the target is a member; with Route 53 configured, both failover records exist and the
target's record health check (if it has one) is healthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from failover.global_database import CHANGING, GlobalDatabase, GlobalState, cluster_id_of
from reflex_core.recovery_config import Failover

Mode = Literal["switchover", "failover", "failback"]
STEADY_DATAPOINTS = 3


def primary_arn(state: GlobalState, identifier: str, secondary_arn: str) -> str | None:
    """The original primary among the members: the cluster named like the protected resource (not the secondary)."""
    return next((m for m in state.members if cluster_id_of(m) == identifier and m != secondary_arn), None)


@dataclass
class PrecheckReport:
    mode: Mode
    api: Literal["switchover", "failover"]
    source_arn: str | None
    target_arn: str
    rpo_s: int
    state: dict[str, Any] = field(default_factory=dict)
    target_health: str = ""
    source_health: str = ""
    lag_s: float | None = None
    lag_datapoints: int = 0
    accept_data_loss_s: int | None = None
    dns: str = ""
    target_set: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lag = "unknown" if self.lag_s is None else f"{self.lag_s:g}s"
        head = (f"{self.mode} ({self.api}_global_cluster) of {cluster_id_of(self.source_arn or '?')} -> "
                f"{cluster_id_of(self.target_arn)}: lag {lag} vs RPO {self.rpo_s}s; target {self.target_health}")
        if self.source_health:
            head += f"; current writer {self.source_health}"
        if self.dns:
            head += f"; {self.dns}"
        if self.notes:
            head += "; " + "; ".join(self.notes)
        if self.problems:
            head += "; REFUSED: " + "; ".join(self.problems)
        return head

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "api": self.api, "source": self.source_arn, "target": self.target_arn,
                "lag_s": self.lag_s, "lag_datapoints": self.lag_datapoints, "rpo_s": self.rpo_s,
                "accept_data_loss_s": self.accept_data_loss_s, "target_health": self.target_health,
                "source_health": self.source_health, "dns": self.dns, "passed": self.passed,
                "problems": list(self.problems), **self.state}


def run_prechecks(db: GlobalDatabase, target: Failover, identifier: str, rpo_s: int, mode: Mode, now: datetime,
                  accept_data_loss_s: int | None = None) -> PrecheckReport:
    state = db.state(target.secondary_region)
    primary = primary_arn(state, identifier, target.secondary_cluster_arn)
    source: str | None
    dest: str | None
    if mode == "failback":
        source, dest = target.secondary_cluster_arn, primary
    else:
        source, dest = primary, target.secondary_cluster_arn
    report = PrecheckReport(mode=mode, api="failover" if mode == "failover" else "switchover", source_arn=source,
                            target_arn=dest or f"<{identifier}: not a member>", rpo_s=rpo_s,
                            state=state.as_dict(), accept_data_loss_s=accept_data_loss_s)
    problems = report.problems
    if state.status in CHANGING or state.failover_state:
        problems.append(f"a switchover or failover of {target.global_cluster} is already under way "
                        f"({state.status}, {state.failover_state})")
    if dest is None:
        problems.append(f"the original primary {identifier} is not a member of {target.global_cluster}: rejoin it "
                        "first (docs/runbooks/region-loss.md, Failback)")
        return report
    if not state.is_member(dest):
        problems.append(f"{cluster_id_of(dest)} is not a member of {target.global_cluster}")
        return report
    if state.writer == dest:
        problems.append(f"{cluster_id_of(dest)} is already the writer of {target.global_cluster}")
    elif state.writer != source:
        problems.append(f"the writer is {state.writer}, not {source}: the global database is not in the shape "
                        f"a {mode} starts from")
    if mode != "failover" and state.status != "available":
        problems.append(f"{target.global_cluster} is {state.status}, not available")

    target_health = db.cluster_health(dest)
    report.target_health = target_health.describe()
    if not target_health.healthy:
        problems.append(f"the target is not healthy: {target_health.describe()}")
    if mode != "failover" and source is not None:
        source_health = db.cluster_health(source)
        report.source_health = source_health.describe()
        if not source_health.healthy:
            problems.append(f"a {mode} needs both regions healthy; the current writer is not: "
                            f"{source_health.describe()} (primary lost: use mode failover)")

    lag = db.lag(dest, now)
    report.lag_s, report.lag_datapoints = lag.max_s, lag.datapoints
    if mode in ("switchover", "failback"):
        if lag.max_s is None:
            problems.append(f"no {lag.window_s // 60}-minute replication lag data for {cluster_id_of(dest)}: "
                            f"a {mode} needs the lag known to be under the RPO")
        elif lag.max_s > rpo_s:
            problems.append(f"replication lag {lag.max_s:g}s is above the RPO {rpo_s}s: wait for it to come down")
        elif mode == "failback" and lag.datapoints < STEADY_DATAPOINTS:
            problems.append(f"replication lag not steady yet ({lag.datapoints} datapoint(s) in "
                            f"{lag.window_s // 60} minutes, {STEADY_DATAPOINTS} needed)")
    else:
        if lag.max_s is None:
            if accept_data_loss_s is None or accept_data_loss_s < rpo_s:
                # An unknown lag is bounded only by what was accepted: at least the RPO (what the objectives
                # already accept); accepting less than that would claim a bound nobody measured.
                problems.append(f"accept_data_loss_s: the replication lag is unknown (no data: the primary region "
                                f"may be gone); a failover then needs accept_data_loss_s >= the RPO {rpo_s}s "
                                f"(seconds of writes you accept to lose; given: {accept_data_loss_s})")
            else:
                report.notes.append(f"lag unknown; up to {accept_data_loss_s}s of data loss accepted")
        elif lag.max_s > rpo_s:
            if accept_data_loss_s is None or accept_data_loss_s < lag.max_s:
                problems.append(f"accept_data_loss_s: replication lag {lag.max_s:g}s is above the RPO {rpo_s}s; "
                                f"a failover losing that much needs accept_data_loss_s >= {lag.max_s:g} "
                                f"(given: {accept_data_loss_s})")
            else:
                report.notes.append(f"lag above the RPO: {accept_data_loss_s}s of data loss accepted")

    if target.dns:
        _check_dns(db, target, dest, report)
    return report


def _check_dns(db: GlobalDatabase, target: Failover, dest: str, report: PrecheckReport) -> None:
    records = db.records()
    sids = set(records.records)
    other = sorted(sids - {str(target.secondary_set_identifier)})
    if target.secondary_set_identifier not in sids or len(other) != 1:
        report.problems.append(f"Route 53: expected two failover records {target.record_name} {target.record_type} "
                               f"(one with SetIdentifier {target.secondary_set_identifier}), found "
                               f"{sorted(sids) or 'none'}")
        return
    set_of_target = (target.secondary_set_identifier if dest == target.secondary_cluster_arn else other[0])
    report.target_set = set_of_target
    report.dns = f"record {target.record_name}: {records.primary_set()} is PRIMARY"
    health_check = records.records[set_of_target].get("HealthCheckId")
    if health_check:
        ok, detail = db.health_check_ok(str(health_check))
        report.dns += f"; target's {detail}"
        if not ok:
            report.problems.append(f"Route 53: the target's record is unhealthy ({detail})")
