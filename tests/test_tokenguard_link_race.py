"""The token guard never resolves ``ne_link_lost`` for a link lost while it checked (review).

At daemon start the order importer found the link dead (Next Engine refused the tokens) and
opened ``ne_link_lost`` while the token guard, running at the same moment, had just read the
link as connected: the guard then resolved the fresh item (``resolved_at`` before its
``first_seen``), so ``nebridge attention`` and the notifiers said nothing for 15 minutes.

The interleaving is forced deterministically: the guard's read of the link
(``daemon.tokenguard.link_info``, the real function) is wrapped so that, right after it read
the link as connected and before the guard resolves anything, another engine (another
session, as the importer is) gets a real refusal from the sandbox and marks the link lost
through the real gate. Real sandbox over HTTP, real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from daemon import attention, tokenguard
from daemon.config import load_config
from daemon.linkinfo import LinkInfo
from daemon.negate import NeGate
from daemon.nelink import (
    CONNECTED,
    LINK_LOST_KEY,
    NEEDS_RECONNECT,
    connect,
    link_lost_problem,
    make_client,
    mark_needs_reconnect,
)
from daemon.nelink import link_info as real_link_info
from daemon.nextengine.errors import NeReauthRequired
from daemon.runtime import build_runtime
from daemon.store.engine import make_engine, read_session
from daemon.store.models import AttentionProblem, NeLink
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, database_url=database_url)


def test_link_lost_between_the_guards_read_and_its_resolve_stays_open(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(world.config).config
    importer_db = make_engine(config.resolved_database_url)  # the importer's own sessions
    importer_client = make_client(config)
    rt = build_runtime(world.config)
    reads: list[str] = []

    def link_info_then_importer_loses_the_link(*args: Any, **kwargs: Any) -> LinkInfo:
        info = real_link_info(*args, **kwargs)
        reads.append(info.state)
        if len(reads) == 1:  # the guard has read "connected"; now the importer runs
            world.sandbox.clock.advance(4 * 86400)  # both tokens lapsed: NE refuses them
            with pytest.raises(NeReauthRequired) as refused:
                importer_client.company_info()
            NeGate(importer_db).observe(refused.value)  # commits needs_reconnect + the item
        return info

    monkeypatch.setattr(tokenguard, "link_info", link_info_then_importer_loses_the_link)
    try:
        guard = rt.token_guard()
        report = guard.check()
        assert reads[0] == CONNECTED  # the guard did read the link as connected
        with read_session(importer_db) as session:
            link = session.get(NeLink, 1)
            item = session.get(AttentionProblem, LINK_LOST_KEY)
        assert link is not None and link.state == NEEDS_RECONNECT
        assert item is not None and item.state == "open" and item.resolved_at is None
        assert report.refresh_end is None and not report.kept_alive  # it saw the link lost
        # the admin signs in again: the guard's next check still closes it
        connect(config, importer_db, *world.sandbox.state.issue_login())
        with read_session(importer_db) as session:
            assert session.get(AttentionProblem, LINK_LOST_KEY).state == "resolved"  # type: ignore[union-attr]
    finally:
        rt.close()
        importer_client.close()
        importer_db.dispose()


def test_the_guard_resolves_a_lost_link_item_once_linked_again(world: World) -> None:
    """The normal path still works: an item left open (a link lost and re-connected while
    nothing resolved it) is closed by the guard's check of a connected link."""
    config = load_config(world.config).config
    db = make_engine(config.resolved_database_url)
    rt = build_runtime(world.config)
    try:
        attention.report(db, link_lost_problem("tokens refused"), source="test")
        rt.token_guard().check()
        with read_session(db) as session:
            item = session.get(AttentionProblem, LINK_LOST_KEY)
        assert item is not None and item.state == "resolved"
    finally:
        rt.close()
        db.dispose()


def test_a_link_marked_lost_while_the_guard_resolves_waits_for_it_then_stays_open(
    world: World,
) -> None:
    """The resolving transaction holds the link row: the importer's marking, begun right
    after the guard's re-read of the link, waits until the guard committed (PostgreSQL: the
    row read ``FOR SHARE``; SQLite: ``BEGIN IMMEDIATE``), and its item then stays open.

    Forced with a hook on the guard's engine: right after the guard's second read of
    ``ne_link`` (the one in its resolving transaction) the importer's real
    :func:`mark_needs_reconnect` starts in a thread, and the guard goes on only once that
    thread is blocked on the database (PostgreSQL: its backend waits for a lock; SQLite:
    still running after a second) or has committed (what a non-locking re-read allowed: the
    guard then resolved the item just opened).
    """
    config = load_config(world.config).config
    importer_db = make_engine(config.resolved_database_url)
    watcher = make_engine(config.resolved_database_url)
    rt = build_runtime(world.config)
    postgres = importer_db.dialect.name == "postgresql"
    with importer_db.connect() as conn:  # the one pooled connection the importer will use
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() if postgres else None
    marking = threading.Thread(
        target=mark_needs_reconnect, args=(importer_db, "refresh token refused")
    )
    link_reads: list[str] = []
    outcome: list[str] = []

    def importer_blocked() -> bool:
        if not postgres:
            return marking.is_alive()
        with watcher.connect() as conn:
            waiting = conn.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            ).scalar()
        return bool(waiting == "Lock")

    def after_execute(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "ne_link" not in statement or not statement.lstrip().upper().startswith("SELECT"):
            return
        link_reads.append(statement)
        if len(link_reads) != 2:  # the first is link_info's read, outside the transaction
            return
        marking.start()
        deadline = time.monotonic() + 10
        time.sleep(1.0 if not postgres else 0.0)
        while time.monotonic() < deadline:
            if not marking.is_alive():
                outcome.append("committed before the guard resolved")
                return
            if importer_blocked():
                outcome.append("waited for the guard")
                return
            time.sleep(0.05)
        outcome.append("neither")

    event.listen(rt.engine, "after_cursor_execute", after_execute)
    try:
        report = rt.token_guard().check()
        marking.join(timeout=30)
        assert not marking.is_alive()
        with read_session(importer_db) as session:
            link = session.get(NeLink, 1)
            item = session.get(AttentionProblem, LINK_LOST_KEY)
        assert link is not None and link.state == NEEDS_RECONNECT
        assert item is not None and item.state == "open" and item.resolved_at is None
        assert outcome == ["waited for the guard"]
        assert report.refresh_end is not None  # linked when the guard resolved: it went on
    finally:
        event.remove(rt.engine, "after_cursor_execute", after_execute)
        rt.close()
        importer_db.dispose()
        watcher.dispose()
