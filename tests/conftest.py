"""Shared fixtures: configurations in tmp folders, both databases, the fake plugin site."""

from __future__ import annotations

import io
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from sqlalchemy import create_engine, text

from daemon.config import load_config
from daemon.store.engine import make_engine, upgrade

FAKE_SITE = Path(__file__).parent / "fakes" / "site"
PG_ENV = "NEBRIDGE_TEST_DATABASE_URL"
PG_SKIP = (f"PostgreSQL tests need {PG_ENV} (e.g. "
           "postgresql+psycopg://postgres@127.0.0.1/test); .ci/run sets it")

DEFAULT_PLUGINS: dict[str, Any] = {
    "status_update": {"enabled": True},
    "tracking_update": {"enabled": True},
    "stock_minus": {"enabled": True},
    "stock_plus": {"enabled": True},
    "tag_filter": {"enabled": False},
    "case_insensitive_match": {"enabled": True},
}
DEFAULT_WAREHOUSES = [
    {"code": "ITAKU", "name": "委託販売在庫", "ne_linked": True, "import_orders": True},
    {"code": "SHINJUKU", "name": "新宿拠点", "ne_linked": False, "import_orders": False},
]


def dump_yaml(data: Any) -> str:
    """YAML text for a plain structure."""
    buf = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.dump(data, buf)
    return buf.getvalue()


ConfigFactory = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a daemon.yaml into tmp_path; keyword arguments override top-level sections."""

    def factory(migrate: bool = True, **overrides: Any) -> Path:
        data: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "nextengine": {"client_id": "test-client", "client_secret": "test-secret-123"},
            "schedule": {"interval_seconds": 60, "jitter_seconds": 0,
                         "dispatch_interval_seconds": 5, "intake_poll_seconds": 0.2},
            "wms": {"connector": "csv", "csv": {"inbox": str(tmp_path / "wms" / "inbox"),
                                                "outbox": str(tmp_path / "wms" / "outbox"),
                                                "stable_seconds": 0.0}},
            "warehouses": DEFAULT_WAREHOUSES,
            "plugins": DEFAULT_PLUGINS,
        }
        data.update(overrides)
        path = tmp_path / "daemon.yaml"
        path.write_text(dump_yaml(data), encoding="utf-8")
        if migrate:
            engine = make_engine(load_config(path).config.resolved_database_url)
            upgrade(engine)
            engine.dispose()
        return path

    return factory


@pytest.fixture
def fake_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Put the fake third-party distribution on sys.path (and PYTHONPATH for subprocesses)."""
    monkeypatch.syspath_prepend(str(FAKE_SITE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(FAKE_SITE), os.environ.get("PYTHONPATH", "")) if p))
    yield FAKE_SITE
    for name in [m for m in sys.modules if m.startswith("nbfake_")]:
        del sys.modules[name]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    schema = f"nbtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
