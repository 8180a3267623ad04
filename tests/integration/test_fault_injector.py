"""The fault injector itself: each kind reaches botocore the way AWS's answer would, per call and attempt."""

from __future__ import annotations

import types

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from simulator.faults import FaultInjector, SimulatedCrash


@pytest.fixture
def no_sleep(monkeypatch):
    import botocore.endpoint

    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _s: None))


def _client(injector: FaultInjector, service: str, attempts: int = 3):
    config = Config(region_name="us-east-1", retries={"mode": "standard", "total_max_attempts": attempts})
    return injector.attach(boto3.session.Session().client(service, config=config))


@pytest.mark.parametrize("service,call,code", [
    ("dynamodb", lambda c: c.list_tables(), "ThrottlingException"),          # json
    ("autoscaling", lambda c: c.describe_auto_scaling_groups(), "ThrottlingException"),  # query
    ("cloudwatch", lambda c: c.describe_alarms(), "ThrottlingException"),     # rpc-v2-cbor
    ("route53", lambda c: c.list_hosted_zones(), "ThrottlingException"),      # rest-xml
    ("backup", lambda c: c.list_backup_vaults(), "ThrottlingException"),      # rest-json
])
def test_persistent_throttle_is_parsed_in_every_protocol_and_retried(service, call, code, no_sleep):
    with mock_aws():
        injector = FaultInjector()
        injector.fail("*", "throttle", persist=True)
        client = _client(injector, service)
        with pytest.raises(ClientError) as err:
            call(client)
        assert err.value.response["Error"]["Code"] == code
        assert injector.calls[0].attempts == 3


def test_first_attempt_fault_is_retried_and_succeeds(no_sleep):
    with mock_aws():
        injector = FaultInjector()
        injector.fail("CreateTable", "5xx")
        ddb = _client(injector, "dynamodb")
        ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        assert injector.calls[0].attempts == 2
        assert ddb.list_tables()["TableNames"] == ["t"]


def test_lost_response_applies_the_request_then_the_retry_applies_again(no_sleep):
    with mock_aws():
        injector = FaultInjector()
        sqs = _client(injector, "sqs")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        injector.fail("SendMessage", "lost-response", calls=(1,))
        sqs.send_message(QueueUrl=url, MessageBody="once")
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "2"  # applied twice: the answer was lost


def test_timeout_does_not_apply_and_crash_after_applies_then_escapes_except_exception(no_sleep):
    with mock_aws():
        injector = FaultInjector()
        sqs = _client(injector, "sqs", attempts=1)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        injector.fail("SendMessage", "timeout", calls=(1,))
        injector.fail("SendMessage", "crash-after", calls=(2,))
        with pytest.raises(ReadTimeoutError):
            sqs.send_message(QueueUrl=url, MessageBody="never")
        caught = False
        try:
            try:
                sqs.send_message(QueueUrl=url, MessageBody="applied")
            except Exception:  # noqa: BLE001 - proving that a crash is not an Exception
                caught = True
        except SimulatedCrash:
            pass
        assert not caught
        body = sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"]
        assert body == "applied"
        assert [c.fault for c in injector.calls] == [None, "timeout", "crash-after", None]
