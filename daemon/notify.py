"""Telling the people who must act: notifications built on the attention items.

There is one source of truth for what waits for a person — :mod:`daemon.attention`. The
notifier compares the current attention keys with the keys it already told about
(:class:`~daemon.store.models.NotifiedKey`) and stores what must be said:

* a key that is new → an ``open`` message; more than ``notify.digest_threshold`` new ones
  within ``notify.digest_window_minutes`` → one ``digest`` for all of them (and, after a
  digest, new keys wait for the window to end and go into the next one);
* a key told about that is gone → ``resolved`` (many at once: one message for all);
* a key still open ``notify.reminder_hours`` after its last message → ``reminder``.

Each message is a :class:`~daemon.store.models.NotificationRow` with one
:class:`~daemon.store.models.NotifyDelivery` per sink (a plugin implementing
``nebridge_notify``), all stored in the transaction that records the keys as told. The
attention state itself is durable, so a crash before that transaction loses nothing (the next
scan finds the same difference) and a crash after it leaves deliveries pending. Deliveries are
sent by the same job, each sink on its own: a failing sink is retried with backoff (doubling
from ``retry_first_seconds`` to ``retry_max_seconds`` per failure in a row; its waiting messages
wait with it) and never holds back other sinks or the pipelines (the job runs on an executor
of its own); once it takes a message again, all that waited for it is sent. A delivery is
marked in flight before it is handed to the sink and sent when the sink returns; one left in
flight by a crash is sent again with the same ``delivery_key`` — the only case a copy can
reach a sink, which the key lets the receiver drop. A sink failing ``failing_after_attempts``
times in a row becomes an attention item itself (told to the other sinks, not to itself).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func
from sqlmodel import Session, col, select

from daemon import attention
from daemon.attention import AttentionItem, AttentionKind
from daemon.config import NotifySettings
from daemon.logsetup import redact
from daemon.pluginmanager import PluginHost
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    DeliveryState,
    NotificationRow,
    NotifiedKey,
    NotifyDelivery,
    ProblemState,
    utcnow,
)
from hooks.notify import NotifyContext, for_company, kind_label
from hooks.records import Notification, Problem

log = logging.getLogger(__name__)

#: The key (and kind) of the one message sent without the database: it is unreachable.
DATABASE_KEY = "database_unreachable"
#: At most this many attention items are compared per scan; beyond it nothing is resolved.
SCAN_LIMIT = 20_000
#: A digest lists the first this many problems (the count covers all).
DIGEST_LINES = 20
DIGEST_IDS = 50
BATCH = 200
#: Batches one run sends at most (a backlog after an outage goes out in a few runs).
MAX_ROUNDS = 10
Event = Literal["open", "reminder", "resolved", "digest", "test"]


def failing_key(sink: str) -> str:
    """The attention key of a sink that keeps failing."""
    return f"{AttentionKind.NOTIFY_FAILING}:{sink}"


@dataclass
class NotifyReport:
    """What one notifier run did."""

    created: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SinkResult:
    """The outcome of a test message at one sink."""

    sink: str
    ok: bool
    error: str = ""


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text)


class Notifier:
    """Builds notifications from attention and delivers them to every sink."""

    def __init__(
        self,
        db: Bind,
        host: PluginHost,
        settings: NotifySettings,
        context: Callable[[], NotifyContext],
        live: Callable[[], Iterable[AttentionItem]] = list,
        clock: Callable[[], datetime] = utcnow,
        company: str = "",
    ) -> None:
        self.db = db
        self.host = host
        self.settings = settings
        self.context = context
        self.live = live
        self.clock = clock
        #: Fleet mode: the company every message names (``""``: a single-company install).
        self.company = company

    def sinks(self) -> list[str]:
        """The loaded plugins that deliver notifications."""
        return self.host.notify_sinks()

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> NotifyReport:
        """Scan attention for what must be said, then send what is due."""
        report = NotifyReport()
        report.created, report.deferred = self.scan()
        self.deliver(report, should_stop)
        return report

    # -- deciding what to say -----------------------------------------------------------------

    def scan(self) -> tuple[int, int]:
        """Store the messages the attention items call for; (stored, new keys deferred)."""
        sinks = self.sinks()
        if not sinks:
            return 0, 0
        now = self.clock()
        found = attention.collect(self.db, live=self.live(), limit=SCAN_LIMIT)
        complete = len(found.items) >= found.total
        current = {item.key: item for item in found.items}
        s = self.settings
        reminded_before = now - timedelta(hours=s.reminder_hours)
        with read_session(self.db) as session:  # most scans find nothing to say or store
            told = _told(session)
        nothing_new = current.keys() <= told.keys()
        nothing_gone = not (complete and told.keys() - current.keys())
        nothing_due = all(row.last_sent_at > reminded_before for row in told.values())
        if nothing_new and nothing_gone and nothing_due:
            return 0, 0
        with write_session(self.db) as session:
            told = _told(session)
            new = sorted((i for k, i in current.items() if k not in told), key=lambda i: i.since)
            # a failing sink is its own message (never in a digest), so it skips that sink
            sinks_failing = [i for i in new if i.kind == AttentionKind.NOTIFY_FAILING]
            new = [i for i in new if i.kind != AttentionKind.NOTIFY_FAILING]
            gone = [row for k, row in told.items() if k not in current] if complete else []
            due = [
                row
                for k, row in told.items()
                if k in current and row.last_sent_at <= reminded_before
            ]
            messages: list[Notification] = []
            deferred = 0
            if new:
                window = now - timedelta(minutes=s.digest_window_minutes)
                recent = int(
                    session.scalar(
                        select(func.coalesce(func.sum(NotificationRow.count), 0))
                        .where(col(NotificationRow.event).in_(["open", "digest"]))
                        .where(col(NotificationRow.created_at) >= window)
                    )
                    or 0
                )
                digested = (
                    session.scalar(
                        select(func.count())
                        .select_from(NotificationRow)
                        .where(col(NotificationRow.event) == "digest")
                        .where(col(NotificationRow.created_at) >= window)
                    )
                    or 0
                )
                if recent + len(new) <= s.digest_threshold:
                    messages.extend(_from_item(i, "open") for i in new)
                elif not digested:
                    messages.append(_digest(new, now, "digest"))
                else:
                    deferred, new = len(new), []
            messages.extend(_from_item(i, "open") for i in sinks_failing)
            new += sinks_failing
            for item in new:
                row = session.get(NotifiedKey, item.key) or NotifiedKey(key=item.key, kind="")
                row.kind, row.warehouse = item.kind[:32], item.warehouse[:32]
                row.subject, row.state = item.subject[:128], ProblemState.OPEN.value
                row.reminders, row.opened_at, row.last_sent_at = 0, now, now
                row.resolved_at = None
                session.add(row)
            if gone:
                if len(gone) > s.digest_threshold:
                    messages.append(_resolved_digest(gone, now))
                else:
                    messages.extend(_resolved(row) for row in gone)
                for row in gone:
                    row.state, row.resolved_at = ProblemState.RESOLVED.value, now
                    session.add(row)
            if due:
                items = [current[row.key] for row in due]
                if len(due) > s.digest_threshold:
                    messages.append(_digest(items, now, "reminder"))
                else:
                    messages.extend(_from_item(i, "reminder") for i in items)
                for row in due:
                    row.last_sent_at, row.reminders = now, row.reminders + 1
                    session.add(row)
            for message in messages:
                _store(session, message, sinks, now)
        if deferred:
            log.info(
                "%d new problem(s) wait for the next digest (one was sent within the last %s min)",
                deferred,
                s.digest_window_minutes,
            )
        return len(messages), deferred

    # -- delivering ---------------------------------------------------------------------------

    def recover(self) -> int:
        """Make deliveries a crash left in flight due again (at start, before any is sent)."""
        with write_session(self.db) as session:
            rows = list(
                session.scalars(
                    select(NotifyDelivery).where(
                        col(NotifyDelivery.state) == DeliveryState.IN_FLIGHT.value
                    )
                )
            )
            for row in rows:
                row.state = DeliveryState.PENDING.value
                session.add(row)
        if rows:
            log.warning(
                "%d notification(s) were being sent when nebridge stopped; they are "
                "sent again with the same delivery key",
                len(rows),
            )
        return len(rows)

    def deliver(
        self, report: NotifyReport | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> NotifyReport:
        """Send the due deliveries, each sink on its own; a failing sink waits its backoff.

        A sink that takes a message again has every delivery waiting for it made due at once
        (the backoff is for a sink that is down, not for the messages), so after an outage
        all that waited is sent in the same run.
        """
        report = report or NotifyReport()
        sinks = set(self.sinks())
        if not sinks:  # nothing can be delivered (and nothing was stored for delivery)
            return report
        failed_sinks = self._in_backoff()
        ctx: NotifyContext | None = None
        for _round in range(MAX_ROUNDS):
            now = self.clock()
            with read_session(self.db) as session:
                due = list(
                    session.scalars(
                        select(NotifyDelivery)
                        .where(col(NotifyDelivery.state) == DeliveryState.PENDING.value)
                        .where(col(NotifyDelivery.next_attempt_at) <= now)
                        .where(col(NotifyDelivery.sink).in_(sorted(sinks - failed_sinks)))
                        .order_by(col(NotifyDelivery.id))
                        .limit(BATCH)
                    )
                )
            if not due:
                break
            for delivery in due:
                if should_stop():
                    return report
                if delivery.sink in failed_sinks:
                    continue
                message = self._claim(delivery.id)
                if message is None:
                    continue
                ctx = ctx or self.context()
                outcome = self.host.notify(delivery.sink, message, ctx)
                error = None if outcome is None else outcome.error
                if error is None:
                    self._sent(delivery.id, delivery.sink)
                    report.sent += 1
                else:
                    failed_sinks.add(delivery.sink)
                    report.failed += 1
                    text = _short(error)
                    report.errors.append(f"{delivery.sink}: {text}")
                    self._failed(delivery.id, delivery.sink, text)
        return report

    def _in_backoff(self) -> set[str]:
        """Sinks that failed and wait for their backoff (a new message waits with them)."""
        with read_session(self.db) as session:
            return set(
                session.scalars(
                    select(col(NotifyDelivery.sink))
                    .distinct()
                    .where(col(NotifyDelivery.state) == DeliveryState.PENDING.value)
                    .where(col(NotifyDelivery.attempts) > 0)
                    .where(col(NotifyDelivery.next_attempt_at) > self.clock())
                )
            )

    def _claim(self, delivery_id: int | None) -> Notification | None:
        """Mark a pending delivery in flight and return its message (None: not pending)."""
        with write_session(self.db) as session:
            row = session.get(NotifyDelivery, delivery_id)
            if row is None or row.state != DeliveryState.PENDING.value:
                return None
            row.state, row.attempts = DeliveryState.IN_FLIGHT.value, row.attempts + 1
            session.add(row)
            stored = session.get(NotificationRow, row.notification_id)
            assert stored is not None
            return company_message(_message(stored, row.delivery_key), self.company)

    def _sent(self, delivery_id: int | None, sink: str) -> None:
        now = self.clock()
        with write_session(self.db) as session:
            row = session.get(NotifyDelivery, delivery_id)
            assert row is not None
            row.state, row.sent_at, row.last_error = DeliveryState.SENT.value, now, None
            session.add(row)
            for waiting in session.scalars(
                select(NotifyDelivery)
                .where(col(NotifyDelivery.sink) == sink)
                .where(col(NotifyDelivery.state) == DeliveryState.PENDING.value)
                .where(col(NotifyDelivery.next_attempt_at) > now)
            ):
                waiting.next_attempt_at = now  # the sink works again: no more backoff
                session.add(waiting)
            attention.resolve_in(session, [failing_key(sink)], now)

    def _failed(self, delivery_id: int | None, sink: str, error: str) -> None:
        now, s = self.clock(), self.settings
        with write_session(self.db) as session:
            row = session.get(NotifyDelivery, delivery_id)
            assert row is not None
            row.state, row.last_error = DeliveryState.PENDING.value, error
            session.add(row)
            session.flush()
            waiting_rows = list(
                session.scalars(
                    select(NotifyDelivery)
                    .where(col(NotifyDelivery.sink) == sink)
                    .where(col(NotifyDelivery.state) == DeliveryState.PENDING.value)
                )
            )
            # the backoff is the sink's: failures in a row = the most attempts of a waiting one
            failures = max(r.attempts for r in waiting_rows)
            retry_at = now + timedelta(
                seconds=min(s.retry_first_seconds * 2 ** max(0, failures - 1), s.retry_max_seconds)
            )
            for waiting_row in waiting_rows:
                waiting_row.next_attempt_at = max(waiting_row.next_attempt_at, retry_at)
                session.add(waiting_row)
            if failures >= s.failing_after_attempts:
                waiting = len(waiting_rows)
                attention.report_in(
                    session,
                    Problem(
                        key=failing_key(sink),
                        kind=AttentionKind.NOTIFY_FAILING,
                        subject=sink,
                        reason=(
                            f"notifications cannot be delivered through {sink}: {error}; "
                            f"{waiting} wait and are retried every "
                            f"{int(s.retry_max_seconds)} s at most, nothing is lost"
                        ),
                        fix=(
                            f"check the settings of plugin {sink} in daemon.yaml and the "
                            f"receiving side, then `nebridge notify test --plugin {sink}`"
                        ),
                    ),
                    source="notify",
                    now=now,
                )
        log.warning("notification sink %s failed (retried with backoff): %s", sink, error)

    # -- test messages ------------------------------------------------------------------------

    def send_test(self, plugin: str | None = None) -> list[SinkResult]:
        """Send a test message through each sink (or ``plugin``) now, and store the outcome."""
        now = self.clock()
        sinks = [s for s in self.sinks() if plugin is None or s == plugin]
        message = company_message(
            Notification(
                key=f"test:{now.isoformat()}",
                kind="test",
                event="test",
                severity="info",
                title="nebridge test message",
                detail="If you read this, nebridge can tell you when something needs a person.",
                fix="nothing to do",
                since=now,
            ),
            self.company,
        )
        results = []
        with write_session(self.db) as session:
            stored = _store(session, message, sinks, now)
            for delivery in stored:  # sent here, never by a running daemon's notifier job
                delivery.state = DeliveryState.IN_FLIGHT.value
            keys = {d.sink: d.delivery_key for d in stored}
        ctx = self.context()
        for sink in sinks:
            outcome = self.host.notify(sink, _replace_key(message, keys[sink]), ctx)
            error = "" if outcome is None or outcome.error is None else _short(outcome.error)
            results.append(SinkResult(sink, not error, error))
            with write_session(self.db) as session:
                row = session.scalars(
                    select(NotifyDelivery).where(col(NotifyDelivery.delivery_key) == keys[sink])
                ).one()
                row.attempts = 1
                row.state = DeliveryState.FAILED.value if error else DeliveryState.SENT.value
                row.last_error, row.sent_at = error or None, None if error else self.clock()
                session.add(row)
        return results


class OutageAlarm:
    """Tells the sinks, without the database, that it has been unreachable for long.

    Nothing can be stored while the database is down, so this one message is not a delivery
    row: it is sent directly to each sink once the outage lasts ``database_down_minutes``,
    tried again at every check until each sink took it, and followed by ``resolved`` when the
    database answers again. It lives in memory: a restart during the outage tells again.
    """

    def __init__(
        self,
        host: PluginHost,
        settings: NotifySettings,
        context: Callable[[], NotifyContext],
        clock: Callable[[], datetime] = utcnow,
        company: str = "",
    ) -> None:
        self.host = host
        self.settings = settings
        self.context = context
        self.clock = clock
        #: Fleet mode: the company every message names (``""``: a single-company install).
        self.company = company
        self.told: set[str] = set()
        self.since: datetime | None = None

    def take_over(self, previous: OutageAlarm) -> None:
        """Continue ``previous``'s outage: what it told (to sinks this one still has) and
        since when, so "reachable again" follows an "unreachable" once, whichever alarm —
        a scheduler's or the supervisor's while it waits for the instance lock — sends it."""
        sinks = set(self.host.notify_sinks())
        self.told = {sink for sink in previous.told if sink in sinks}
        self.since = previous.since if self.told else None

    def check(self, down_seconds: float | None, reason: str = "") -> list[str]:
        """Tell what is due for an outage of ``down_seconds`` (None: the database answers);
        return the errors of sinks that did not take it (they are tried at the next check)."""
        sinks = self.host.notify_sinks()
        if down_seconds is not None and down_seconds >= self.settings.database_down_minutes * 60:
            self.since = self.since or self.clock() - timedelta(seconds=down_seconds)
            minutes = int(down_seconds // 60)
            message = Notification(
                key=DATABASE_KEY,
                kind=DATABASE_KEY,
                event="open",
                severity="error",
                title=f"Database unreachable for {minutes} min",
                detail=(
                    f"nebridge cannot reach its database ({reason or 'no answer'}); all "
                    "work is paused and resumes by itself when it answers — nothing is "
                    "lost, the WMS keeps its events until they are taken"
                ),
                fix=(
                    "check the database server and the network (`nebridge doctor` names the "
                    "error); `journalctl -u nebridge` shows the outage"
                ),
                since=self.since,
            )
            return self._send(message, [s for s in sinks if s not in self.told], self.told.add)
        if down_seconds is None and self.told:
            message = Notification(
                key=DATABASE_KEY,
                kind=DATABASE_KEY,
                event="resolved",
                severity="info",
                title="Database reachable again",
                detail="nebridge reaches its database again and resumed its work",
                since=self.since,
            )
            errors = self._send(message, sorted(self.told), self.told.discard)
            if not self.told:
                self.since = None
            return errors
        return []

    def _send(
        self, message: Notification, sinks: list[str], done: Callable[[str], None]
    ) -> list[str]:
        errors = []
        for sink in sinks:
            keyed = company_message(
                _replace_key(
                    message,
                    f"{DATABASE_KEY}:{message.event}:"
                    f"{message.since.isoformat() if message.since else ''}:{sink}",
                ),
                self.company,
            )
            outcome = self.host.notify(sink, keyed, self.context())
            if outcome is None or outcome.error is None:
                done(sink)
            else:
                errors.append(f"{sink}: {_short(outcome.error)}")
        return errors


# -- building messages ------------------------------------------------------------------------


def _severity(value: str) -> Literal["info", "warning", "error"]:
    return "warning" if value == "warning" else "info" if value == "info" else "error"


def _from_item(item: AttentionItem, event: Event) -> Notification:
    label = kind_label(item.kind, "en")
    return Notification(
        key=item.key,
        kind=item.kind,
        event=event,
        severity=_severity(item.severity),
        title=f"{label}: {item.subject}" if item.subject else label,
        detail=item.reason,
        fix=item.fix,
        warehouse=item.warehouse,
        ids=(item.subject,) if item.subject else (),
        since=item.since,
    )


def _line(kind: str, subject: str, warehouse: str, reason: str = "") -> str:
    text = " ".join(
        p for p in (kind_label(kind, "en"), subject, f"({warehouse})" if warehouse else "") if p
    )
    if reason:
        text += f" — {reason}"
    return text if len(text) <= 200 else text[:199] + "…"


def _counts(kinds: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} × {kind_label(k, 'en')}" for k, n in sorted(counts.items()))


def _digest(items: list[AttentionItem], now: datetime, event: Event) -> Notification:
    warehouses = {i.warehouse for i in items}
    still = event == "reminder"
    return Notification(
        key=f"{event}:{now.isoformat()}",
        kind="digest",
        event="digest" if not still else "reminder",
        severity="error" if any(i.severity == "error" for i in items) else "warning",
        title=(f"{len(items)} problems {'are still open' if still else 'need a person'}"),
        detail=_counts(i.kind for i in items),
        fix="`nebridge attention` lists each with its fix",
        warehouse=warehouses.pop() if len(warehouses) == 1 else "",
        ids=tuple(i.subject or i.key for i in items[:DIGEST_IDS]),
        since=min(i.since for i in items),
        count=len(items),
        lines=tuple(_line(i.kind, i.subject, i.warehouse, i.reason) for i in items[:DIGEST_LINES]),
    )


def _resolved(row: NotifiedKey) -> Notification:
    label = kind_label(row.kind, "en")
    return Notification(
        key=row.key,
        kind=row.kind,
        event="resolved",
        severity="info",
        title=f"Resolved — {label}: {row.subject}" if row.subject else f"Resolved — {label}",
        detail="",
        warehouse=row.warehouse,
        ids=(row.subject,) if row.subject else (),
        since=row.opened_at,
    )


def _resolved_digest(rows: list[NotifiedKey], now: datetime) -> Notification:
    warehouses = {r.warehouse for r in rows}
    return Notification(
        key=f"resolved:{now.isoformat()}",
        kind="digest",
        event="resolved",
        severity="info",
        title=f"{len(rows)} problems resolved",
        detail=_counts(r.kind for r in rows),
        warehouse=warehouses.pop() if len(warehouses) == 1 else "",
        ids=tuple(r.subject or r.key for r in rows[:DIGEST_IDS]),
        since=min(r.opened_at for r in rows),
        count=len(rows),
        lines=tuple(_line(r.kind, r.subject, r.warehouse) for r in rows[:DIGEST_LINES]),
    )


def _told(session: Session) -> dict[str, NotifiedKey]:
    """The open problems the sinks were told of, by key."""
    rows = session.scalars(
        select(NotifiedKey).where(col(NotifiedKey.state) == ProblemState.OPEN.value)
    )
    return {row.key: row for row in rows}


def _store(
    session: Session, message: Notification, sinks: Iterable[str], now: datetime
) -> list[NotifyDelivery]:
    """Store ``message`` and one pending delivery per sink (not to a sink about itself)."""
    row = NotificationRow(
        key=message.key[:200],
        kind=message.kind[:32],
        event=message.event,
        severity=message.severity,
        title=message.title,
        detail=message.detail,
        fix=message.fix,
        warehouse=message.warehouse[:32],
        ids=json.dumps(list(message.ids)),
        lines=json.dumps(list(message.lines)),
        count=message.count,
        since=message.since,
        created_at=now,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    deliveries = []
    for sink in sinks:
        if message.key == failing_key(sink):
            continue
        delivery = NotifyDelivery(
            notification_id=row.id,
            sink=sink,
            delivery_key=f"{row.id}:{sink}"[:100],
            next_attempt_at=now,
        )
        session.add(delivery)
        deliveries.append(delivery)
    return deliveries


def _message(row: NotificationRow, delivery_key: str) -> Notification:
    event: Event = row.event  # type: ignore[assignment]
    return Notification(
        key=row.key,
        kind=row.kind,
        event=event,
        severity=_severity(row.severity),
        title=row.title,
        detail=row.detail,
        fix=row.fix,
        warehouse=row.warehouse,
        ids=tuple(json.loads(row.ids)),
        since=row.since,
        count=row.count,
        lines=tuple(json.loads(row.lines)),
        delivery_key=delivery_key,
    )


def company_message(message: Notification, company: str) -> Notification:
    """``message`` naming ``company`` (fleet mode), its suggested commands carrying
    ``--company`` (:func:`hooks.notify.for_company`); unchanged for ``""``."""
    if not company:
        return message
    return replace(
        message,
        company=company,
        detail=for_company(message.detail, company),
        fix=for_company(message.fix, company),
        lines=tuple(for_company(line, company) for line in message.lines),
    )


def _replace_key(message: Notification, delivery_key: str) -> Notification:
    data: dict[str, Any] = {f: getattr(message, f) for f in message.__dataclass_fields__}
    data["delivery_key"] = delivery_key
    return Notification(**data)


# -- reading ----------------------------------------------------------------------------------


def recent(db: Bind, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` notifications with their delivery state per sink (``notify list``)."""
    with read_session(db) as session:
        rows = list(
            session.scalars(
                select(NotificationRow).order_by(col(NotificationRow.id).desc()).limit(limit)
            )
        )
        ids = [r.id for r in rows]
        deliveries: dict[int, list[NotifyDelivery]] = {}
        for d in session.scalars(
            select(NotifyDelivery)
            .where(col(NotifyDelivery.notification_id).in_(ids))
            .order_by(col(NotifyDelivery.id))
        ):
            deliveries.setdefault(d.notification_id, []).append(d)
    return [
        {
            "id": r.id,
            "key": r.key,
            "kind": r.kind,
            "event": r.event,
            "severity": r.severity,
            "title": r.title,
            "warehouse": r.warehouse,
            "count": r.count,
            "created_at": r.created_at.isoformat(),
            "deliveries": [
                {
                    "sink": d.sink,
                    "delivery_key": d.delivery_key,
                    "state": d.state,
                    "attempts": d.attempts,
                    "next_attempt_at": d.next_attempt_at.isoformat(),
                    "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                    "last_error": d.last_error,
                }
                for d in deliveries.get(r.id or 0, [])
            ],
        }
        for r in rows
    ]


def pending_by_sink(db: Bind) -> dict[str, int]:
    """How many deliveries wait per sink (``status``)."""
    with read_session(db) as session:
        return {
            str(sink): int(n)
            for sink, n in session.execute(
                select(col(NotifyDelivery.sink), func.count())
                .where(
                    col(NotifyDelivery.state).in_(
                        [DeliveryState.PENDING.value, DeliveryState.IN_FLIGHT.value]
                    )
                )
                .group_by(col(NotifyDelivery.sink))
            )
        }
