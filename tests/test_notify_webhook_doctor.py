"""``doctor`` fails when notify_webhook has no URL (or token) anywhere (new-admin review F11).

``config check`` and ``doctor`` passed with the plugin enabled and no URL, so staff would
hear nothing until ``notify_failing``. Looked up where ``notify test`` looks: the credential
(systemd's copy or the file in ``credentials_dir``), the env variable, daemon.yaml. The real
CLI on a real configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory

ENVS = ("NEBRIDGE_NOTIFY_WEBHOOK_URL", "NEBRIDGE_NOTIFY_CHATWORK_TOKEN", "CREDENTIALS_DIRECTORY")


@pytest.fixture(autouse=True)
def _no_secrets_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)


def doctor(config: Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["--config", str(config), "doctor", "--offline", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    return result.exit_code, checks


def configure(make_config: ConfigFactory, tmp_path: Path, **section: Any) -> Path:
    return make_config(
        credentials_dir=str(tmp_path / "credentials"),
        plugins={**DEFAULT_PLUGINS, "notify_webhook": {"enabled": True, **section}},
    )


def test_no_webhook_url_anywhere_fails_doctor(make_config: ConfigFactory, tmp_path: Path) -> None:
    code, checks = doctor(configure(make_config, tmp_path, format="slack"))
    check = checks["notify_webhook: webhook URL"]
    assert code == 1 and check["ok"] is False
    assert "notify-webhook-url" in check["fix"] and "NEBRIDGE_NOTIFY_WEBHOOK_URL" in check["fix"]


def test_a_url_in_the_credential_or_env_passes(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(make_config, tmp_path, format="json")
    (tmp_path / "credentials").mkdir()
    secret = tmp_path / "credentials" / "notify-webhook-url"
    secret.write_text("https://hooks.example/abc\n", encoding="utf-8")
    secret.chmod(0o600)
    _code, checks = doctor(config)
    assert checks["notify_webhook: webhook URL"]["ok"] is True
    assert "hooks.example" not in json.dumps(checks)  # a webhook URL is a secret
    secret.unlink()
    monkeypatch.setenv("NEBRIDGE_NOTIFY_WEBHOOK_URL", "https://hooks.example/abc")
    _code, checks = doctor(config)
    assert checks["notify_webhook: webhook URL"]["ok"] is True


def test_chatwork_needs_its_token(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(make_config, tmp_path, format="chatwork", room_id="123456")
    code, checks = doctor(config)
    assert code == 1 and checks["notify_webhook: Chatwork API token"]["ok"] is False
    monkeypatch.setenv("NEBRIDGE_NOTIFY_CHATWORK_TOKEN", "t0ken")
    _code, checks = doctor(config)
    assert checks["notify_webhook: Chatwork API token"]["ok"] is True
