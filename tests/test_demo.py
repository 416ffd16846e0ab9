"""The README's first command: the demo runs end to end and checks itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_passes_its_own_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "demo check passed" in result.stderr
    assert "notified (what staff receive): 【要対応】取込保留の受注: 61 (ITAKU)" in result.stderr
    assert (tmp_path / "demo" / "wms" / "inbox" / "processed").is_dir()
