"""ServerConfig validation and load_config precedence: flags > VARFX_* env > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from varfx.server.config import ConfigError, ServerConfig, load_config


def test_defaults() -> None:
    c = ServerConfig()
    assert (c.host, c.port, c.metrics_port, c.device) == ("0.0.0.0", 50051, 9090, "auto")
    assert (c.max_batch, c.max_delay_ms, c.max_queue) == (256, 2.0, 8192)
    assert c.max_variants_per_request == 10000
    assert c.genome is None
    assert c.grace_s == 30.0
    assert c.warmup_sizes == (1, 2, 4, 8, 16, 32, 64, 128, 256)


def test_warmup_sizes_include_max_batch_or_the_configured_ones() -> None:
    assert ServerConfig(max_batch=100).warmup_sizes == (1, 2, 4, 8, 16, 32, 64, 100)
    assert ServerConfig(max_batch=100, warmup_batch_sizes=(3, 100)).warmup_sizes == (3, 100)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"device": "gpu"}, "device='gpu'"),
        ({"port": 70000}, "port=70000"),
        ({"port": -1}, "port=-1"),
        ({"metrics_port": -2}, "metrics_port=-2"),
        ({"max_batch": 1}, "max_batch=1"),
        ({"max_queue": 0}, "max_queue=0"),
        ({"max_variants_per_request": 0}, "max_variants_per_request=0"),
        ({"inference_threads": 0}, "inference_threads=0"),
        ({"intra_op_threads": -1}, "intra_op_threads=-1"),
        ({"max_delay_ms": -0.5}, "max_delay_ms=-0.5"),
        ({"grace_s": -1.0}, "grace_s=-1.0"),
        ({"max_connection_age_s": -3.0}, "max_connection_age_s=-3.0"),
        ({"max_message_mb": 0}, "max_message_mb=0"),
        ({"model_versions": {"m": 0}}, "model_versions={'m': 0}"),
        ({"max_batch": 8, "warmup_batch_sizes": (4, 16)}, "warmup_batch_sizes=(4, 16)"),
    ],
)
def test_invalid_values_are_named(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ConfigError) as err:
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    assert text in str(err.value)


def test_metrics_port_off_and_ephemeral_ports_are_valid() -> None:
    c = ServerConfig(port=0, metrics_port=-1)
    assert (c.port, c.metrics_port) == (0, -1)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "varfx.toml"
    path.write_text(text)
    return path


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'model_repo = "/file/models"\nport = 1111\nmax_batch = 64\nmax_queue = 100\n'
        'device = "cpu"\n',
    )
    env = {"VARFX_PORT": "2222", "VARFX_MAX_BATCH": "32", "VARFX_GENOME": "/env/hg38.fa"}
    c = load_config({"port": 3333, "max_queue": None}, config_file=path, environ=env)
    assert c.port == 3333  # flag beats env and file
    assert c.max_batch == 32  # env beats file
    assert c.genome == Path("/env/hg38.fa")
    assert c.max_queue == 100  # a None flag (not given) does not override
    assert c.model_repo == Path("/file/models")
    assert c.device == "cpu"
    assert c.metrics_port == 9090  # default


def test_file_from_varfx_config_env_and_server_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "[server]\nmax_delay_ms = 5\nwarmup_batch_sizes = [1, 8]\nmax_batch = 8\n"
        "[server.model_versions]\ndeepsea = 2\n",
    )
    c = load_config(environ={"VARFX_CONFIG": str(path)})
    assert c.max_delay_ms == 5.0
    assert isinstance(c.max_delay_ms, float)
    assert c.warmup_batch_sizes == (1, 8)
    assert c.model_versions == {"deepsea": 2}


def test_env_parsing_of_structured_values() -> None:
    env = {
        "VARFX_MODEL_VERSIONS": "a=2, b=1",
        "VARFX_WARMUP_BATCH_SIZES": "1,4,16",
        "VARFX_MAX_DELAY_MS": "0.5",
        "VARFX_METRICS_PORT": "-1",
        "VARFX_GENOME": "",
        "VARFX_DEFAULT_MODEL": "deepsea",
        "VARFX_LOG_REQUESTS": "yes",
        "VARFX_ORT_SPINNING": "on",
    }
    c = load_config(environ=env)
    assert c.log_requests is True
    assert c.ort_spinning is True
    assert load_config(environ={}).ort_spinning is False
    assert load_config(environ={"VARFX_LOG_REQUESTS": "0"}).log_requests is False
    assert c.model_versions == {"a": 2, "b": 1}
    assert c.warmup_batch_sizes == (1, 4, 16)
    assert c.max_delay_ms == 0.5
    assert c.metrics_port == -1
    assert c.genome is None
    assert c.default_model == "deepsea"


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"VARFX_PORT": "http"}, "port='http'"),
        ({"VARFX_MAX_BATCH": "2.5"}, "max_batch='2.5'"),
        ({"VARFX_MODEL_VERSIONS": "a"}, "model_versions='a'"),
        ({"VARFX_DEVICE": "tpu"}, "device='tpu'"),
        ({"VARFX_LOG_REQUESTS": "maybe"}, "log_requests='maybe'"),
    ],
)
def test_bad_env_values_are_named(env: dict[str, str], text: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert text in str(err.value)


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    unknown = write_toml(tmp_path, "port = 1\nmax_batchsize = 4\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['max_batchsize'\]") as err:
        load_config(config_file=unknown, environ={})
    assert str(unknown) in str(err.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(config_file=broken, environ={})
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(config_file=tmp_path / "missing.toml", environ={})
    fractional = write_toml(tmp_path, "port = 50051.5\n")
    with pytest.raises(ConfigError, match="port=50051.5"):
        load_config(config_file=fractional, environ={})
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_config({"prot": 1}, environ={})


def test_config_is_frozen() -> None:
    c = ServerConfig()
    with pytest.raises(AttributeError):
        c.port = 1  # type: ignore[misc]


def test_public_surface_resolves() -> None:
    import varfx.server as server

    for name in server.__all__:
        assert getattr(server, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = server.nope
