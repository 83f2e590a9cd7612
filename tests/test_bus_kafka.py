"""The Kafka backend's settings: URL options, clear errors, security passed through from the environment."""

from __future__ import annotations

import re

import pytest

from comms.bus import open_bus
from comms.bus.kafka import KafkaBus, security_settings
from comms.errors import ConfigError


def test_url_options() -> None:
    bus = KafkaBus.from_url("kafka://k1:9092,k2:9093?partitions=6&replication=3&session_timeout=12")
    assert bus.servers == ["k1:9092", "k2:9093"]
    assert (bus.partitions, bus.replication) == (6, 3)
    assert bus.consumer_kwargs["session_timeout_ms"] == 12000
    assert bus.client_kwargs["bootstrap_timeout_ms"] == 5000


@pytest.mark.parametrize(
    "url,expected",
    [
        ("kafka://127.0.0.1:", "is not host:port"),
        ("kafka://kafka", "is not host:port"),
        ("kafka://kafka:9092?partition=3", "unknown option(s) partition"),
    ],
)
def test_bad_urls_are_config_errors(url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        open_bus(url)


def test_security_from_environment() -> None:
    env = {
        "COMMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "COMMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "COMMS_KAFKA_SASL_USERNAME": "comms",
        "COMMS_KAFKA_SASL_PASSWORD": "s3cret",
        "OTHER": "x",
    }
    assert security_settings(env) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "comms",
        "sasl_plain_password": "s3cret",
    }
    assert security_settings({}) == {}
