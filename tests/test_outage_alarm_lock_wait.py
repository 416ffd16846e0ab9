"""A database outage that drops the instance lock is still told to the notify sinks.

Single-company mode on PostgreSQL (new-admin review BLOCKER): the outage drops the lock's
connection, the supervisor stops the scheduler — whose database alarm used to be the only
thing telling the sinks — and waits to take the lock again. The supervisor now keeps that
alarm going while it waits, and the alarm's state carries over to the next scheduler, so a
real webhook receiver gets "unreachable" once, then "reachable again" once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tests.conftest import DEFAULT_PLUGINS, ConfigFactory, fresh_schema, pg_base
from tests.notify_receivers import HttpReceiver, http_receiver
from tests.pgproxy import TcpProxy
from tests.test_postgres_first_class import log_has, spelled, start_daemon, stop, wait_until


def _database_messages(receiver: HttpReceiver) -> list[tuple[str, str]]:
    bodies: list[dict[str, Any]] = [json.loads(r.body) for r in receiver.requests]
    return [(b["event"], b["title"]) for b in bodies if b["key"] == "database_unreachable"]


def test_an_outage_that_drops_the_lock_is_told_then_resolved_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    base = pg_base()
    target = make_url(base)
    with (
        fresh_schema("nbalarm_") as schema,
        http_receiver() as receiver,
        TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy,
    ):
        webhook = {"enabled": True, "format": "json", "url": receiver.url, "timeout_seconds": 2}
        config = make_config(
            database_url=spelled(base, schema, host="127.0.0.1", port=proxy.port),
            plugins={**DEFAULT_PLUGINS, "notify_webhook": webhook},
            notify={"database_down_minutes": 0.03, "interval_seconds": 0.5},  # 1.8 s
        )
        log = tmp_path / "daemon.log"
        daemon = start_daemon(config, log)
        try:
            wait_until(log_has(log, "nebridge running"), "the daemon to run")
            time.sleep(1)  # its scheduler's alarm has looked a few times: all well
            assert _database_messages(receiver) == []

            proxy.stop()  # the database goes away: the lock is lost, work stops
            wait_until(log_has(log, "lost the instance lock"), "the loss to be noticed")
            wait_until(
                lambda: _database_messages(receiver) != [], "the outage to be told", timeout=30
            )
            assert not log_has(log, "work resumes")()  # told while waiting for the lock
            time.sleep(2)  # several more checks while it is still down: told only once
            assert [event for event, _ in _database_messages(receiver)] == ["open"]

            proxy.start()
            wait_until(log_has(log, "work resumes"), "the daemon to take the lock again")
            wait_until(lambda: len(_database_messages(receiver)) == 2, "the recovery to be told")
            time.sleep(2)  # the new scheduler's alarm runs a few times: nothing more
        finally:
            code = stop(daemon)
        assert code == 0
        messages = _database_messages(receiver)
        assert [event for event, _ in messages] == ["open", "resolved"], messages
        assert messages[0][1].startswith("Database unreachable for")
        assert messages[1][1] == "Database reachable again"
        text = log.read_text(encoding="utf-8")
        assert "Traceback" not in text and "could not tell" not in text, text
