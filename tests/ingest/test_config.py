"""Configuration: file + environment merging, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from ingest.config import PROJECT_ROOT, ConfigError, FlowLensConfig, load_config

EXAMPLE = PROJECT_ROOT / "flowlens.example.yaml"


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> FlowLensConfig:
    path = tmp_path / "flowlens.yaml"
    path.write_text(text)
    return load_config(path, environ=environ or {})


def _error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text, environ)
    return str(err.value)


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_example_file_loads_and_documents_the_defaults() -> None:
    assert load_config(EXAMPLE, environ={}) == FlowLensConfig()


def test_example_file_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    missing = [
        key for key in _leaf_keys(FlowLensConfig) if not re.search(rf"^\s*#?\s*{key.rsplit('.', 1)[-1]}:", text, re.M)
    ]
    assert missing == [], f"add these keys to flowlens.example.yaml: {missing}"


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert (cfg.mode, cfg.postgres.port, cfg.backpressure.ingestion.sample_rate) == ("minimal", 55432, 10)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        "flowlens:\n  mode: standard\n  postgres:\n    port: 6000\n",
        {
            "FLOWLENS_POSTGRES__PORT": "6001",
            "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_RATE": "5",
            "FLOWLENS_INGEST__ALLOWED_EXPORTERS": '["10.0.0.0/8", "127.0.0.1"]',
            "UNRELATED": "x",
        },
    )
    assert cfg.mode == "standard"
    assert cfg.postgres.port == 6001
    assert cfg.backpressure.ingestion.sample_rate == 5
    assert cfg.ingest.allowed_exporters == ["10.0.0.0/8", "127.0.0.1"]


def test_unknown_key_is_named_with_the_way_out(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  postgres:\n    prot: 5432\n")
    assert "postgres.prot = 5432" in message
    assert "unknown key" in message and "flowlens.example.yaml" in message


def test_wrong_type_names_key_value_and_env_var(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  postgres:\n    port: fivefourfour\n")
    assert "postgres.port = 'fivefourfour'" in message
    assert "valid integer" in message
    assert "FLOWLENS_POSTGRES__PORT" in message


def test_out_of_range_value_says_what_is_allowed(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  redis:\n    port: 70000\n")
    assert "redis.port = 70000" in message
    assert "less than or equal to 65535" in message


def test_bad_mode_lists_the_modes(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  mode: turbo\n")
    assert "mode = 'turbo'" in message
    for mode in ("minimal", "standard", "full", "auto"):
        assert mode in message


def test_hysteresis_must_not_be_inverted(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "flowlens:\n  thresholds:\n    kafka:\n"
        "      enable_at_flows_per_sec: 1000\n      disable_at_flows_per_sec: 2000\n",
    )
    assert "thresholds.kafka" in message
    assert "disable_at_flows_per_sec (2000) must not exceed enable_at_flows_per_sec (1000)" in message


def test_kafka_replication_is_bounded_by_the_brokers_and_defaults_to_three_with_min_isr_two(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  kafka:\n    replication_factor: 3\n")
    assert "kafka.replication_factor (3) is more than kafka.brokers (1)" in message
    message = _error(tmp_path, "flowlens:\n  kafka:\n    brokers: 3\n    min_insync_replicas: 4\n")
    assert "kafka.min_insync_replicas (4) is more than kafka.replication_factor (3)" in message
    assert "is not host:port" in _error(tmp_path, "flowlens:\n  kafka:\n    bootstrap_servers: kafka1,kafka2:9092\n")
    one, five = _load(tmp_path, "flowlens: {}\n").kafka, _load(tmp_path, "flowlens:\n  kafka:\n    brokers: 5\n").kafka
    assert (one.replication, one.min_isr, five.replication, five.min_isr) == (1, 1, 3, 2)
    servers = "kafka1:9092,[::1]:9093"
    cluster = _load(tmp_path, f"flowlens:\n  kafka:\n    brokers: 2\n    bootstrap_servers: '{servers}'\n").kafka
    assert (cluster.servers, cluster.replication, cluster.min_isr) == ([("kafka1", 9092), ("::1", 9093)], 2, 1)


def test_backpressure_levels_must_be_ordered(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  backpressure:\n    ingestion:\n      sample_at_queue_depth: 200000\n")
    assert "backpressure.ingestion" in message
    assert "sample_at_queue_depth <= drop_at_queue_depth <= max_queue_depth" in message


def test_bad_cidr_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  ingest:\n    allowed_exporters: ['10.0.0.0/33']\n")
    assert "ingest.allowed_exporters" in message and "'10.0.0.0/33' is not an IP address or CIDR" in message


def test_invalid_environment_value_names_the_variable(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens: {}\n", {"FLOWLENS_KAFKA__RAW_PARTITIONS": "0"})
    assert "kafka.raw_partitions = 0" in message
    assert "FLOWLENS_KAFKA__RAW_PARTITIONS" in message
    assert "greater than or equal to 1" in message


def test_a_bad_list_item_names_the_variable_that_overrides_the_whole_list(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens: {}\n", {"FLOWLENS_INGEST__LISTEN": '[{"port": 70000}]'})
    assert "ingest.listen.0.port = 70000" in message
    assert "FLOWLENS_INGEST__LISTEN='[...]'" in message and "FLOWLENS_INGEST__LISTEN__PORT" not in message
    # and that variable really is accepted
    assert (
        _load(tmp_path, "flowlens: {}\n", {"FLOWLENS_INGEST__LISTEN": '[{"port": 7000}]'}).ingest.listen[0].port == 7000
    )


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    message = _error(tmp_path, "flowlens:\n  mode: x\n  redis:\n    port: -1\n  dns:\n    bogus: 1\n")
    assert all(key in message for key in ("mode = 'x'", "redis.port = -1", "dns.bogus = 1"))


def test_missing_file_points_at_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist .*FLOWLENS_CONFIG"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_file_must_hold_a_flowlens_mapping(tmp_path: Path) -> None:
    assert "top-level key 'flowlens'" in _error(tmp_path, "flowlens: [1, 2]\n")
    assert "not valid YAML" in _error(tmp_path, "flowlens: {mode: [\n")


def test_flowlens_config_env_var_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("flowlens:\n  mode: full\n")
    monkeypatch.setenv("FLOWLENS_CONFIG", str(path))
    assert load_config().mode == "full"


def test_commands_stop_at_start_on_invalid_config(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWLENS_REDIS__PORT": "not-a-port"}
    env.pop("FLOWLENS_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "flowlens_dagster.cli", "stack", "status"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "redis.port = 'not-a-port'" in result.stderr
    assert "Traceback" not in result.stderr
