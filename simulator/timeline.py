"""Render a simulation as a terminal timeline and a summary an SRE can read at a glance.

One row per decision: when (offset and UTC wall time), what triggered it, the outcome per policy, the
change (before -> intended) and the capacity read back from the target afterwards. Consecutive periodic
evaluations that decide the same thing collapse into one row (`--all` shows every one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from simulator.scenario import DecisionView, SimulationResult, TimelineEntry, format_offset

# What each outcome means, in the words an on-call engineer needs (reasons from the core and the scaler).
MEANINGS = {
    "executed": "the change was made",
    "dry-run": "the change was planned, not made (dry run)",
    "rejected:validation": "the payload was malformed; nothing ran",
    "skipped:kill-switch": "the SSM kill switch is on",
    "skipped:not-allowlisted": "the target is not in the config",
    "skipped:duplicate-delivery": "this event was already handled (idempotency)",
    "skipped:duplicate-in-progress": "the same event is being handled right now",
    "skipped:duplicate-alarm": "the alarm was already in ALARM; only a transition acts",
    "skipped:stale-event": "an older alarm state arrived after a newer one",
    "skipped:circuit-open-tripped": "rate limit reached: the circuit breaker opened (PAGE)",
    "skipped:circuit-open": "the circuit breaker is open",
    "skipped:cooldown": "too soon after the last action in that direction",
    "skipped:locked": "another invocation holds the target's lock",
    "skipped:at-max": "already at the maximum",
    "skipped:at-min": "already at the floor (min or pre-warm)",
    "skipped:out-of-bounds": "requested capacity outside the bounds",
    "skipped:below-floor": "requested capacity below the active floor",
    "skipped:step-too-large": "requested change larger than max_step",
    "skipped:no-change": "capacity already as requested",
    "skipped:stabilizing": "alarms OK, but not for long enough to scale in",
    "skipped:insufficient-data": "missing data never scales in",
    "skipped:no-alarm-data": "no alarm state recorded yet",
    "skipped:no-scale-in": "the policy has no scale_in",
    "skipped:no-policy": "no policy had anything to do with this trigger",
    "skipped:frozen": "scale-in frozen while a promotion may still move traffic back",
    "skipped:in-alarm": "no decrease while an alarm of the policy is in ALARM (per CloudWatch)",
    "skipped:capacity-changed": "capacity changed while the request was checked: refused, never guessed",
    "skipped:alarm-state-unreadable": "CloudWatch unreadable: no action on remembered alarm state",
    "skipped:release-already-live": "a GreenReady for the release already live (a replay): refused",
    # the promoter (see docs/runbooks/promotion.md)
    "skipped:preflight-refused": "the promotion's preflight refused it; no traffic moved",
    "skipped:promotion-in-flight": "another promotion of the pair is in flight",
    "skipped:colour-is-live": "that colour already serves the traffic",
    "skipped:no-promotion": "no promotion of the pair in flight (or retained)",
    "skipped:alarm-not-breaching": "a guard alarm left ALARM: nothing to roll back",
    "skipped:green-unhealthy": "the incoming colour lacks healthy targets: rollback instead",
    "skipped:paused": "the promotion is paused: it holds its weights",
    "skipped:stopped": "the promotion ended (rolled back or aborted) outside this step",
    "skipped:already-rolled-back": "the promotion was already rolled back",
    "skipped:retention-ended": "the old colour is no longer retained: no instant rollback",
}

_OPERATIONS = {"scale_out": "out", "scale_in": "in", "set_capacity": "set", "prewarm_start": "prewarm",
               "prewarm_end": "prewarm-end"}
_TRIGGER_WIDTH = 72
_COLUMNS = ("T+", "UTC", "STEP", "TRIGGER", "POLICY", "DECISION", "ACTION", "CAPACITY", "CHECK", "DETAIL")


@dataclass
class _Row:
    offset: str = ""
    wall: str = ""
    step: str = ""
    trigger: str = ""
    policy: str = ""
    decision: str = ""
    action: str = ""
    capacity: str = ""
    check: str = ""
    detail: str = ""

    def cells(self) -> list[str]:
        return [self.offset, self.wall, self.step, self.trigger, self.policy, self.decision, self.action,
                self.capacity, self.check, self.detail]


# --------------------------------------------------------------------------- cells


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 2] + ".."


def _weights(w: dict[str, Any] | None) -> str:
    return "?" if not w else f"b{w.get('blue', 0)}/g{w.get('green', 0)}"


def action_text(d: DecisionView) -> str:
    acted = d.outcome in ("executed", "dry-run") or d.outcome.startswith("failed:")
    if d.intended is None or not acted:
        return ""
    if "weights" in d.intended:  # a promotion's shift or rollback
        op = {"shift": "shift", "rollback": "rollback", "abort": "abort"}.get(d.operation or "", d.operation or "")
        return f"{op} {_weights((d.before or {}).get('weights'))}->{_weights(d.intended['weights'])}"
    if "verdict" in d.intended:
        return f"check: {d.intended['verdict']}"
    if "live" in d.intended and "status" in d.intended:
        return f"live {d.intended['live']}"
    op = _OPERATIONS.get(d.operation or "", d.operation or "")
    before = (d.before or {}).get("desired")
    after = d.intended.get("desired")
    if after is None:
        floor = d.intended.get("floor")
        return f"{op} floor {floor}" if floor is not None else op
    return f"{op} {before}->{after}"


def capacity_text(capacity: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, cap in capacity.items():
        if "error" in cap:
            parts.append(f"{name}=?{cap['error']}")
            continue
        if "weights" in cap:  # a promotion pair: its weights, and the live colour when traffic is split
            parts.append(f"{name}={_weights(cap['weights'])}")
            continue
        text = f"{name}={cap.get('desired')}"
        if cap.get("floor"):  # an Auto Scaling group's MinSize, when it holds a floor
            text += f"(min {cap['floor']})"
        parts.append(text)
    return " ".join(parts)


def _check_text(entry: TimelineEntry) -> str:
    if not entry.checks:
        return ""
    return "ok" if all(c.passed for c in entry.checks) else "FAIL"


def _decision_text(d: DecisionView) -> str:
    return d.outcome if d.audited or ":" not in d.outcome or d.outcome.startswith(("ssm:", "lock:")) \
        else f"{d.outcome} (quiet)"


def _entry_rows(entry: TimelineEntry, trigger: str | None = None, since: TimelineEntry | None = None) -> list[_Row]:
    first = since or entry
    head = _Row(offset=first.offset, wall=first.at.strftime("%H:%M:%S"), step=entry.step_id or "",
                trigger=_clip(trigger or entry.label, _TRIGGER_WIDTH), check=_check_text(entry),
                capacity=capacity_text(entry.capacity))
    rows: list[_Row] = []
    for i, d in enumerate(entry.decisions):
        row = head if i == 0 else _Row(capacity=head.capacity)
        row.policy = d.policy or "-"
        row.decision = _decision_text(d)
        row.action = action_text(d)
        row.detail = d.detail
        rows.append(row)
    if not entry.decisions:
        head.decision = "(no decision)"
        rows.append(head)
    if entry.error:
        rows.append(_Row(decision="raised", detail=entry.error))
    return rows


# --------------------------------------------------------------------------- collapsing periodic runs


def _signature(entry: TimelineEntry) -> tuple[Any, ...]:
    return (tuple((d.policy, d.outcome, d.audited) for d in entry.decisions),
            tuple(sorted((k, v.get("desired"), str(v.get("weights"))) for k, v in entry.capacity.items())),
            entry.error)


def _groups(entries: list[TimelineEntry], show_all: bool) -> list[list[TimelineEntry]]:
    groups: list[list[TimelineEntry]] = []
    for entry in entries:
        if entry.origin == "tick" and not entry.decisions and not entry.error and not show_all:
            continue
        last = groups[-1] if groups else None
        if (not show_all and last and entry.origin == "tick" and last[-1].origin == "tick"
                and _signature(last[-1]) == _signature(entry)
                and not any(d.outcome == "executed" for d in entry.decisions)):
            last.append(entry)
        else:
            groups.append([entry])
    return groups


# --------------------------------------------------------------------------- rendering


def _table(rows: list[_Row]) -> list[str]:
    header = _Row(*_COLUMNS)
    all_rows = [header, *rows]
    widths = [max(len(r.cells()[i]) for r in all_rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for r in all_rows:
        cells = r.cells()
        body = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True))
        lines.append(f"{body}  {cells[-1]}".rstrip())
    return lines


def render_header(result: SimulationResult) -> list[str]:
    s = result.scenario
    every = (f"evaluate every {result.evaluate_every_s:g}s" if result.evaluate_every_s
             else "no periodic evaluate")
    lines = [f"Reflex simulator: {s.name}   (config {result.config_path or '?'}, stage {result.config.stage})"]
    if s.description:
        lines += [f"  {line}" for line in s.description.strip().splitlines()]
    lines.append(f"  start {s.start.strftime('%Y-%m-%d %H:%M:%S')} UTC, {format_offset(s.duration)} simulated, "
                 f"{every}, kill-switch cache {result.config.guardrails.kill_switch_cache_s}s")
    for p in result.watched:
        cap = result.initial_capacity.get(p.name, {}).get("desired")
        out = f"out cooldown {p.scale_out.cooldown_s}s" if p.scale_out else "no scale-out"
        si = (f"in -{p.scale_in.step} after OK {p.scale_in.when_ok_for_s}s, cooldown {p.scale_in.cooldown_s}s"
              if p.scale_in else "no scale-in")
        lines.append(f"  {p.name} ({p.target.key}): desired {cap} at start; bounds {p.bounds.min}..{p.bounds.max}, "
                     f"max_step {p.bounds.max_step}; {out}; {si}; {p.rate_limit.max_actions_per_hour} actions/h")
    for pair in result.config.promotions if any(k for k in result.initial_capacity
                                                if "weights" in result.initial_capacity[k]) else []:
        steps = " -> ".join(f"{w}% ({bake}s)" for w, bake in pair.steps())
        gate = f"approval before the last step ({pair.approval.timeout_s}s)" if pair.approval else "no approval gate"
        guards = ", ".join([*pair.guard_alarms.names, *(f"{g}*" for g in pair.guard_alarms.prefixes)])
        lines.append(f"  promotion {pair.name} ({pair.target.kind}): green {steps}; {gate}; retention "
                     f"{pair.retention_s}s; guards {guards}")
    return lines


def render_timeline(result: SimulationResult, show_all: bool = False) -> list[str]:
    rows: list[_Row] = []
    for group in _groups(result.entries, show_all):
        first, last = group[0], group[-1]
        if len(group) == 1:
            rows += _entry_rows(first)
        else:
            label = f"{first.label.split(' (')[0]} x{len(group)} ({first.offset}..{last.offset})"
            rows += _entry_rows(last, trigger=label, since=first)
    return _table(rows)


def render_summary(result: SimulationResult) -> list[str]:
    lines = ["", f"Audit trail: {len(result.audit)} records"]
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for record in result.audit:
        by_outcome.setdefault(record["outcome"], []).append(record)
    start = result.scenario.start

    def offset_of(record: dict[str, Any]) -> str:
        from datetime import datetime

        at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
        return format_offset((at - start).total_seconds())

    order = list(MEANINGS)
    table = [("OUTCOME", "COUNT", "FIRST", "LAST", "MEANING")]
    for outcome in sorted(by_outcome, key=lambda o: (order.index(o) if o in order else len(order), o)):
        records = by_outcome[outcome]
        meaning = MEANINGS.get(outcome, "")
        if outcome == "executed":
            ops = Counter(r.get("operation") or "?" for r in records)
            meaning = ", ".join(f"{op} x{n}" for op, n in ops.items())
        table.append((outcome, str(len(records)), offset_of(records[0]), offset_of(records[-1]), meaning))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        lines.append("  " + "  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]),
                                       r[3].ljust(widths[3]), r[4]]).rstrip())

    quiet = Counter(d.outcome for e in result.entries for d in e.decisions
                    if not d.audited and not d.outcome.startswith(("ssm:", "lock:")))
    if quiet:
        lines.append("  not audited (periodic checks with nothing to change): "
                     + ", ".join(f"{o} x{n}" for o, n in sorted(quiet.items())))
    raised = [e for e in result.entries if e.error]
    if raised:
        lines.append(f"  invocations that raised (Lambda would retry, then dead-letter): {len(raised)}")

    lines.append("")
    final = result.entries[-1].capacity if result.entries else {}
    for p in result.watched:
        begin = result.initial_capacity.get(p.name, {}).get("desired")
        end = final.get(p.name, {}).get("desired")
        lines.append(f"Capacity {p.name}: {begin} -> {end} (bounds {p.bounds.min}..{p.bounds.max})")
    for name, cap in final.items():
        if "weights" in cap:
            begin_cap = result.initial_capacity.get(name, {})
            lines.append(f"Promotion {name}: {_weights(begin_cap.get('weights'))} -> {_weights(cap['weights'])}, "
                         f"live {begin_cap.get('live')} -> {cap.get('live')} ({cap.get('status')})")

    checks = result.checks
    failed = result.failed_checks
    lines.append(f"Expectations: {len(checks) - len(failed)} passed, {len(failed)} failed")
    for entry, check in failed:
        where = f"{entry.offset}" + (f" [{entry.step_id}]" if entry.step_id else "")
        scope = f" ({check.policy})" if check.policy else ""
        lines.append(f"  FAIL {where} {check.check}{scope}: expected {check.expected!r}, got {check.actual!r}")
    return lines


LEGEND = ("xN: N consecutive periodic evaluations with the same result.  (quiet): a periodic check that "
          "changed nothing, logged but not audited.")


def render(result: SimulationResult, show_all: bool = False) -> str:
    return "\n".join([*render_header(result), "", *render_timeline(result, show_all), LEGEND,
                      *render_summary(result)])
