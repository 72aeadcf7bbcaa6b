"""TLS/SASL settings reach aiokafka, secrets come from the environment or a file, and a
retried publish is one that can succeed by waiting."""

from __future__ import annotations

import ssl

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from disrouter.actors.config import KafkaSpec
from disrouter.actors.kafka import KafkaConfigError, connection_options
from disrouter.actors.publisher import retriable


def spec(**fields) -> KafkaSpec:
    return msgspec.convert({"bootstrap_servers": "broker:9093", **fields}, KafkaSpec)


def test_plaintext_is_the_default():
    assert connection_options(KafkaSpec()) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


async def test_sasl_ssl_with_a_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    options = connection_options(spec(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                      credentials={"sasl_username": "agent-small", "sasl_password_env": "KAFKA_PW"}))
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "agent-small", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname
    AIOKafkaProducer(**options)  # aiokafka takes them as they are (it connects only on start)


def test_password_from_a_file_and_missing_secrets(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    creds = {"sasl_username": "u", "sasl_password_file": str(secret)}
    assert connection_options(spec(security_protocol="SASL_PLAINTEXT", credentials=creds))["sasl_plain_password"] == "from-file"
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(KafkaConfigError, match=r"\$NOPE is not set"):
        connection_options(spec(security_protocol="SASL_PLAINTEXT", credentials={"sasl_username": "u", "sasl_password_env": "NOPE"}))
    with pytest.raises(KafkaConfigError, match="sasl_username"):
        connection_options(spec(security_protocol="SASL_PLAINTEXT"))


def test_unknown_kafka_settings_are_still_refused():
    with pytest.raises(msgspec.ValidationError, match="sasl_plain_password"):
        spec(sasl_plain_password="inline secrets are not a field")


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (KafkaConnectionError(), True),
        (NotLeaderForPartitionError(), True),
        (KafkaTimeoutError(), True),  # aiokafka says not retriable; waiting can still help
        (MessageSizeTooLargeError(), False),
        (TopicAuthorizationFailedError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_publish_errors_are_retried(error, again):
    assert retriable(error) is again
