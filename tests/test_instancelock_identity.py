"""The SQLite instance lock follows the database file, not its name (attacker review).

Two daemons ran side by side when the second reached the database file through a hard link
in another directory: the lock file sat next to each name. The lock is now also keyed on
the file's identity (a lock on the database file itself). Real files, a real second process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from daemon.config import load_config
from daemon.instancelock import AlreadyRunning, InstanceLock, instance_lock
from daemon.store.engine import make_engine
from tests.conftest import ConfigFactory

ROOT = Path(__file__).resolve().parent.parent


def second_installation(config: Path, tmp_path: Path) -> Path:
    """A copy of ``config`` in another folder whose database is a hard link to the first."""
    first = load_config(config).config
    database = first.resolved_database_url.removeprefix("sqlite:///")
    other = tmp_path / "other"
    other.mkdir()
    os.link(database, other / "linked.db")
    yaml = YAML()
    data = yaml.load(config.read_text(encoding="utf-8"))
    data["state_dir"] = str(other / "state")
    data["database_url"] = f"sqlite:///{other / 'linked.db'}"
    path = other / "daemon.yaml"
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)
    return path


def test_a_hard_link_in_another_folder_reaches_the_same_lock(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    other = second_installation(config, tmp_path)
    first = load_config(config).config
    second = load_config(other).config
    assert first.resolved_database_url != second.resolved_database_url
    engine1 = make_engine(first.resolved_database_url)
    engine2 = make_engine(second.resolved_database_url)
    try:
        with instance_lock(first, engine1) as lock:
            assert InstanceLock(second, engine2).lock_file() != lock.lock_file()  # two names
            with pytest.raises(AlreadyRunning, match="hard link"), instance_lock(second, engine2):
                pass
            once = subprocess.run(
                [sys.executable, "-m", "daemon", "--config", str(other), "run", "--once"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert once.returncode == 1, once
            assert "hard link" in once.stderr and "stop it first" in once.stderr
        with (
            instance_lock(second, engine2),
            pytest.raises(AlreadyRunning),
            instance_lock(first, engine1),
        ):  # released: the
            pass  # other name may work now, and keeps the first out in turn
    finally:
        engine1.dispose()
        engine2.dispose()
