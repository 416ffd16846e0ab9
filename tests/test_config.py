"""daemon.yaml loading: YAML paths and lines in errors, defaults, secrets, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, client_secret, config_path_from, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_core_error_is_reported_with_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
state_dir: ./state
schedule:
  interval_seconds: -5
warehouses:
  - code: ITAKU
    ne_linked: maybe
  - code: "bad code!"
nextengine:
  client_idd: typo
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issues = {i.path: i for i in info.value.issues}
    assert set(issues) == {
        "schedule.interval_seconds",
        "warehouses[0].ne_linked",
        "warehouses[1].code",
        "nextengine.client_idd",
    }
    assert issues["schedule.interval_seconds"].line == 3
    assert issues["warehouses[0].ne_linked"].line == 6
    assert issues["warehouses[1].code"].line == 7
    assert issues["nextengine.client_idd"].line == 9
    assert "nebridge config check" in str(info.value)


def test_duplicate_warehouse_codes_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "warehouses:\n  - code: A\n  - code: A\n")
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(path)


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: ./s\nplugins:\n  status_update: {enabled: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues[0].line is not None
    assert "invalid YAML" in info.value.issues[0].message


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config PATH or set NEBRIDGE_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: var\n")
    cfg = load_config(path).config
    assert cfg.state_dir == tmp_path / "var"
    assert cfg.resolved_database_url == f"sqlite:///{tmp_path / 'var' / 'nebridge.db'}"
    assert cfg.nextengine.api_base == "https://api.next-engine.org"
    assert cfg.nextengine.login_base == "https://base.next-engine.org"
    assert cfg.token_file == tmp_path / "var" / "nextengine-tokens.json"
    assert cfg.wms.connector == "csv"


def test_client_secret_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, "nextengine:\n  client_secret: from-file-secret\n")
    cfg = load_config(path).config
    assert client_secret(cfg, env={}) == "from-file-secret"
    assert client_secret(cfg, env={"NEBRIDGE_NE_CLIENT_SECRET": "from-env"}) == "from-env"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "nextengine-client-secret").write_text("from-systemd\n")
    env = {"NEBRIDGE_NE_CLIENT_SECRET": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert client_secret(cfg, env=env) == "from-systemd"
    assert "from-file-secret" not in repr(cfg)


def test_config_path_resolution() -> None:
    assert config_path_from(None, env={}) == Path("daemon.yaml")
    assert config_path_from(None, env={"NEBRIDGE_CONFIG": "/etc/nebridge/daemon.yaml"}) == Path(
        "/etc/nebridge/daemon.yaml"
    )
    assert config_path_from(Path("x.yaml"), env={"NEBRIDGE_CONFIG": "y"}) == Path("x.yaml")


def test_the_shipped_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "daemon.yaml"
    cfg = load_config(example).config
    assert [w.code for w in cfg.warehouses] == ["ITAKU", "SHINJUKU", "ASAKUSA"]
    assert [w.ne_linked for w in cfg.warehouses] == [True, False, False]
