"""Config input is bounded (issue #12.10): an alias bomb, a huge file, deep nesting and a
self-referring alias are refused with a clear error before anything expands them; the HTTP
limits are configurable and reach the connectors' session and the Next Engine client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import MAX_YAML_BYTES, MAX_YAML_VALUES, ConfigError, load_config
from daemon.nelink import make_client
from daemon.runtime import build_runtime
from tests.conftest import ConfigFactory


def alias_bomb(levels: int = 9) -> str:
    """The classic "billion laughs": 10**levels strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "daemon.yaml"
    path.write_text("state_dir: ./state\n" + alias_bomb(), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"more than {MAX_YAML_VALUES:,} values" in message and "alias" in message


def test_an_alias_bomb_fails_config_check_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "daemon.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "alias" in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_a_huge_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "daemon.yaml"
    line = "# " + "x" * 1021 + "\n"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("state_dir: ./state\n")
        for _ in range(50 * 1024):  # 50 MB
            handle.write(line)
    result = CliRunner().invoke(app, ["--config", str(path), "config", "check"])
    assert result.exit_code == 1
    assert f"larger than {MAX_YAML_BYTES // 1024} kB" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_deep_nesting_and_a_self_referring_alias_are_plain_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 200000 + "]" * 200000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested more than 64 deep"):
        load_config(deep)
    blocks = tmp_path / "blocks.yaml"  # indentation nesting: the parser's own limit
    blocks.write_text("".join(" " * i + f"k{i}:\n" for i in range(1400)), encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(blocks)
    looped = tmp_path / "loop.yaml"  # ruamel reads an alias inside its own anchor as null
    looped.write_text("state_dir: &x\n  b: *x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="state_dir"):
        load_config(looped)


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "daemon.yaml"
    path.write_text(
        """\
state_dir: ./state
warehouses:
  - &base {code: A, ne_linked: true}
  - {<<: *base, code: B}
""",
        encoding="utf-8",
    )
    assert [(w.code, w.ne_linked) for w in load_config(path).config.warehouses] == [
        ("A", True),
        ("B", True),
    ]


def test_http_limits_are_configurable(make_config: ConfigFactory) -> None:
    path = make_config(
        http={"deadline_seconds": 30, "max_response_mb": 2, "connect_timeout_seconds": 3},
        nextengine={
            "client_id": "c",
            "client_secret": "s",
            "connect_timeout_seconds": 4,
            "read_timeout_seconds": 600,
            "max_response_mb": 8,
        },
    )
    runtime = build_runtime(path)
    try:
        limits = runtime.http.limits
        assert (
            limits.connect_timeout_seconds,
            limits.deadline_seconds,
            limits.max_response_bytes,
        ) == (3, 30, 2 * 1024 * 1024)
        assert runtime.connector_context().http is runtime.http
    finally:
        runtime.close()
    with make_client(load_config(path).config, secret="s") as client:
        assert client.timeout == (4.0, 600.0)
        assert client._session.limits.deadline_seconds == 604
        assert client._session.limits.max_response_bytes == 8 * 1024 * 1024
