"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked against the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from comms.bus.kafka import KafkaBus
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
CODE = "\n".join(p.read_text("utf-8") for p in (ROOT / "comms").rglob("*.py"))
README = (ROOT / "README.md").read_text("utf-8")
CONSUMERS = {  # service -> the module it runs, and its arguments
    "press": ("consumers.press_release",),
    "sms": ("consumers.sms",),
    "email": ("consumers.email",),
    "attendance": ("consumers.attendance",),
    "voice": ("consumers", "voice"),
    "feedback": ("consumers", "feedback"),
}


def test_every_consumer_has_a_service() -> None:
    from comms.worker import consumer_names

    assert set(consumer_names()) == set(CONSUMERS)


def test_services_and_images() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"kafka", "postgres", "serve", *CONSUMERS}
    assert re.fullmatch(r"postgres:\d+\.\d+", services["postgres"]["image"])  # official image, pinned
    assert "${COMMS_POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]  # no secret here
    assert services["serve"]["command"][:2] == ["comms", "serve"]
    assert services["serve"]["ports"] == ["127.0.0.1:8080:8080"]  # the host publishes it on loopback only
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])  # official image, pinned
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert "127.0.0.1:29092:29092" in services["kafka"]["ports"]


def test_consumers_run_modules_that_exist_and_reach_the_broker() -> None:
    services = COMPOSE["services"]
    kafka_env = services["kafka"]["environment"]
    internal = re.search(r"INTERNAL://(\w+):(\d+)", kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    for name, (module, *args) in CONSUMERS.items():
        svc = services[name]
        assert svc["command"] == ["python", "-m", module, *args]
        assert importlib.util.find_spec(module) is not None
        bus = KafkaBus.from_url(svc["environment"]["COMMS_BUS"])
        assert bus.servers == [f"{internal[1]}:{internal[2]}"] and internal[1] == "kafka"
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_every_variable_is_one_the_code_reads_and_the_readme_documents() -> None:
    for name in CONSUMERS:
        for var in COMPOSE["services"][name]["environment"]:
            assert f'"{var}"' in CODE, f"{var} is set in docker-compose.yml but no code reads it"
            assert f"`{var}`" in README, f"{var} is not in the README's settings"


def test_paths_in_the_image_exist_in_the_repo() -> None:
    env = COMPOSE["services"]["sms"]["environment"]
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    for var, repo_path in (("COMMS_CONFIG", "campaigns.yaml"), ("COMMS_TEMPLATES", "templates")):
        assert env[var] == f"/app/{repo_path}" and (ROOT / repo_path).exists()
        assert f"COPY {repo_path} " in dockerfile
    assert Path(env["COMMS_VAR"]).parent == Path("/data")


def test_what_must_survive_a_restart_lives_in_named_volumes() -> None:
    """`docker compose down` and `up` keep the Kafka log (topics, committed offsets) and the ledger."""
    import base64

    services = COMPOSE["services"]

    def mounts(svc: dict) -> list[Path]:
        named = [m.split(":") for m in svc["volumes"]]
        assert all(volume in COMPOSE["volumes"] for volume, _ in named)  # named volumes, not the container
        return [Path(path) for _, path in named]

    kafka = services["kafka"]["environment"]
    log_dirs = [Path(d) for d in str(kafka["KAFKA_LOG_DIRS"]).split(",")]
    assert all(any(d == m or m in d.parents for m in mounts(services["kafka"])) for d in log_dirs)
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16  # fixed: the volume is formatted once
    pgdata = Path("/var/lib/postgresql/18/docker")  # the postgres:18 image's PGDATA
    assert services["postgres"]["image"].startswith("postgres:18.")
    assert any(m in pgdata.parents for m in mounts(services["postgres"]))
    for name in CONSUMERS:
        env = services[name]["environment"]
        assert Path(env["COMMS_VAR"]).parent in mounts(services[name])  # accounts, attendance counts
        ledger = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", env["COMMS_LEDGER"]))  # as compose interpolates it
        assert (ledger.scheme, ledger.hostname, ledger.port) == ("postgresql", "postgres", 5432)
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_delivery_consumers_scale_and_share_fan_outs() -> None:
    """Replicas of the SMS and e-mail consumers split each fan-out in shards on a PostgreSQL ledger:
    with SQLite (one file on one host) replicas would not share it."""
    services = COMPOSE["services"]
    for name in ("sms", "email"):
        env = services[name]["environment"]
        assert services[name]["deploy"]["replicas"] >= 2
        assert int(env["COMMS_SHARD_SIZE"]) > 0 and env["COMMS_LEDGER"].startswith("postgresql://")
        partitions = int(re.search(r"partitions=(\d+)", env["COMMS_BUS"])[1])
        assert partitions >= services[name]["deploy"]["replicas"]  # a shard topic partition for each
