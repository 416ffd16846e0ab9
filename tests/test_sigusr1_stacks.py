"""SIGUSR1 to the single-company daemon writes every thread's stack and the daemon goes on
(attacker review F10: it ended the process at once, without a log line, while a fleet worker
dumps its stacks on the same signal)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ConfigFactory


def wait_for_text(path: Path, text: str, seconds: float = 60.0) -> str:
    """The file's content once it holds ``text``; fail with the content if it never does."""
    deadline = time.monotonic() + seconds
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8", errors="replace")
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in:\n{content[-3000:]}")


def test_sigusr1_dumps_the_stacks_and_the_daemon_keeps_running(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            wait_for_text(stderr, "nebridge running")
            proc.send_signal(signal.SIGUSR1)
            dump = wait_for_text(stderr, "Current thread")
            assert 'File "' in dump and "supervisor.py" in dump
            assert proc.poll() is None  # still running after the dump
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    assert code == 0, stderr.read_text(encoding="utf-8", errors="replace")[-3000:]
    assert "stopped" in stderr.read_text(encoding="utf-8", errors="replace")
