"""Only nebridge's start creates the CSV WMS folders: read-only commands (often run as root)
build the connector too, and must leave nothing behind that the service user cannot write.

Real CLI over a real installation: commands in-process (typer's CliRunner), ``run --once`` as
a subprocess under the systemd unit's umask.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory

#: Commands that only look; ``run --once --dry-run`` changes nothing either.
READ_ONLY = [
    ["config", "check"],
    ["systemd", "unit"],
    ["status"],
    ["status", "--json"],
    ["doctor", "--offline", "--json"],
    ["inbox", "list"],
    ["run", "--once", "--dry-run"],
]


def test_read_only_commands_create_no_folder_and_run_creates_them_0750(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    wms = tmp_path / "wms"
    output: dict[str, str] = {}
    stdout: dict[str, str] = {}
    for command in READ_ONLY:
        result = CliRunner().invoke(app, ["--config", str(config), *command])
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        assert not wms.exists(), f"`nebridge {' '.join(command)}` created {wms}"
        output[" ".join(command)] = result.stdout + result.stderr
        stdout[" ".join(command)] = result.stdout

    checks = {c["name"]: c for c in json.loads(stdout["doctor --offline --json"])["checks"]}
    for key in ("inbox", "outbox"):
        folder = wms / key
        assert (
            checks[f"wms_csv: wms.csv.{key}"]["detail"],
            checks[f"wms_csv: wms.csv.{key}"]["fix"],
        ) == (
            f"{folder} is missing",
            f"start the service (`nebridge run` creates it), or "
            f"mkdir -p {folder} && chown {pwd.getpwuid(os.geteuid()).pw_name}: {folder}",
        )
    assert f"the inbox folder {wms / 'inbox'} does not exist" in output["run --once --dry-run"]

    for stock in ("take", "diff"):  # they take the counts the WMS dropped: said, not a traceback
        take = CliRunner().invoke(app, ["--config", str(config), "stock", stock])
        assert take.exit_code == 1 and not wms.exists()
        assert take.stderr.startswith(
            f"error: the WMS's stock counts could not be read: the inbox folder {wms / 'inbox'} "
            "does not exist: nebridge creates it when it starts"
        ), take.output

    umask = re.search(r"^UMask=(\d+)$", output["systemd unit"], re.M)
    assert umask is not None and umask.group(1) == "0027"
    nebridge = [sys.executable, "-m", "daemon", "--config", str(config), "run", "--once"]
    run = subprocess.run(
        ["sh", "-c", f'umask {umask.group(1)} && exec "$@"', "sh", *nebridge],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "does not exist" not in run.stdout + run.stderr, run.stdout + run.stderr
    made = [
        wms,
        wms / "inbox",
        wms / "inbox" / ".claimed",
        wms / "inbox" / "processed",
        wms / "inbox" / "rejected",
        wms / "outbox",
    ]
    assert {str(f): oct(stat.S_IMODE(f.stat().st_mode)) for f in made} == {
        str(f): "0o750" for f in made
    }
    assert sorted(p.name for p in (wms / "inbox").iterdir()) == [
        ".claimed",
        "processed",
        "rejected",
    ]
