"""Adversarial tests, round 2 (branch atk2): attacks on the fixes of 2026-12-02.

Each test asserts the CORRECT behaviour and fails on the current code; its docstring names the defect.
Attacks that held are listed in ATTACK_ROUND2.md (no test).
"""

from __future__ import annotations

import contextlib
from typing import Any

from botocore.exceptions import ClientError

from tests.support.resharder_world import GROUP  # fixtures `stub`, `reshard`: tests/conftest.py
from tests.support.resharder_world import console as _console


def console(command: str, **extra: Any) -> dict[str, Any]:
    return _console(command, reason="attack round 2", **extra)


def _throttled(op: str) -> ClientError:
    return ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, op)


# --------------------------------------------------------------------------- resharder: reconcile without marker


def test_resharder_retry_never_audits_someone_elses_resharding_as_executed_when_no_marker_was_written(
        world, reshard, stub, clock) -> None:
    """Defect (fix 5, `ReshardingReaction.reconcile`): the module promises "a resharding Reflex did not send is
    never audited as Reflex's", and `execute` refuses such a state (`Superseded("already-there")`). But
    `reconcile` answers `applied` for any add/remove whenever the group shows the intended count -- the marker
    (`_ours`) is only required for `rebalance`. Scenario: an operator's add_shards (3 -> 4) is planned and its
    intent recorded; the marker write is throttled (nothing is sent), and the re-read after the failure is
    throttled too, so the intent stays open. Meanwhile another operator adds the shard by hand in the console
    (the group is available with 4 shards). The re-sent command completes the open intent: reconcile says
    `applied` and the audit records `executed` (cooldown recorded) for a change Reflex never sent -- no marker,
    no ModifyReplicationGroupShardConfiguration call. Expected: not `executed` (e.g. `skipped:target-changed`
    or `skipped:already-there`)."""
    rt = world.activate("resharder", clock)
    real_put = rt.store.put_doc
    real_describe = stub.describe_replication_groups
    st = {"put_failed": False, "describes_after": 0}

    def put_doc(pk: str, doc: dict[str, Any], expires_at: float) -> None:
        if pk.startswith("resharder#sent#") and not st["put_failed"]:
            st["put_failed"] = True
            raise _throttled("PutItem")
        real_put(pk, doc, expires_at)

    def describe(**params: Any) -> Any:
        if st["put_failed"] and st["describes_after"] == 0:  # the re-read right after the failed attempt
            st["describes_after"] += 1
            raise _throttled("DescribeReplicationGroups")
        return real_describe(**params)

    rt.store.put_doc = put_doc  # type: ignore[method-assign]
    stub.describe_replication_groups = describe  # type: ignore[method-assign]
    first = reshard(console("add_shards", request_id="grow-1"))
    assert first["decisions"][0]["outcome"].startswith("failed:"), first
    assert stub.modifications == []
    assert rt.store.get_doc(f"resharder#sent#elasticache-rg/{GROUP}") is None
    # Someone else adds the shard (console / CLI): the group is available with 4 shards.
    stub.add_group(GROUP, 4)
    clock.advance(120)
    again = reshard(console("add_shards", request_id="grow-1"))  # the operator re-sends the command
    assert stub.modifications == []
    outcomes = [d["outcome"] for d in again["decisions"]]
    assert "executed" not in outcomes, again["decisions"]
