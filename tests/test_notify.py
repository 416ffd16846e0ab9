"""Notifications: real SMTP and HTTP receivers on loopback, the rules (once, reminder, digest,
resolved), failing sinks, crashes, and the ``nebridge notify`` commands."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from daemon import attention
from daemon.attention import AttentionKind
from daemon.cli import app
from daemon.notify import Notifier, OutageAlarm, failing_key
from daemon.runtime import Runtime, build_runtime
from daemon.store.engine import write_session
from daemon.store.models import ImportedOrder, NotifyDelivery
from hooks.notify import kind_label
from hooks.records import Problem
from plugins.notify_webhook import signature
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.notify_receivers import HttpReceiver, free_port, http_receiver, smtp_receiver

T0 = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as r:
        yield r


def _runtime(
    make_config: ConfigFactory, plugins: dict[str, Any], clock: Clock, **overrides: Any
) -> Runtime:
    """A runtime with these plugins (beside the default ones) on the test's clock."""
    path = make_config(plugins={**DEFAULT_PLUGINS, **plugins}, **overrides)
    rt = build_runtime(path)
    rt.clock = clock  # type: ignore[method-assign]
    return rt


def _json_sink(url: str, **options: Any) -> dict[str, Any]:
    return {
        "notify_webhook": {
            "enabled": True,
            "format": "json",
            "url": url,
            "timeout_seconds": 2,
            **options,
        }
    }


def _problem(n: int | str, warehouse: str = "ITAKU") -> Problem:
    return Problem(
        key=f"wms_mismatch:{n}",
        kind="wms_mismatch",
        subject=f"S{n}",
        warehouse=warehouse,
        reason=f"schedule S{n} was renumbered by staff",
        fix=f"check schedule S{n} in Logikura",
    )


def _bodies(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests]


def _notifier(rt: Runtime) -> Notifier:
    return rt.notifier()


# -- sinks ------------------------------------------------------------------------------------


def test_json_webhook_is_the_typed_record_signed_with_hmac(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url + "/hook", secret="s3cret-key"), clock)
    try:
        attention.report(rt.engine, _problem(7), now=clock())
        report = _notifier(rt).run_once()
    finally:
        rt.close()
    assert (report.created, report.sent, report.failed) == (1, 1, 0)
    [request] = receiver.requests
    assert request.path == "/hook"
    body = json.loads(request.body)
    assert body["key"] == "wms_mismatch:7" and body["event"] == "open"
    assert body["warehouse"] == "ITAKU" and body["ids"] == ["S7"]
    assert body["fix"] == "check schedule S7 in Logikura"
    assert "【要対応】" in body["subject"] and "対処: check schedule S7" in body["text"]
    stamp = request.headers["X-Nebridge-Timestamp"]
    assert request.headers["X-Nebridge-Signature"] == signature("s3cret-key", stamp, request.body)
    assert request.headers["X-Nebridge-Signature"] != signature("other", stamp, request.body)
    assert request.headers["X-Nebridge-Delivery"] == body["delivery_key"]
    assert body["delivery_key"].endswith(":notify_webhook")


def test_slack_and_chatwork_bodies(
    make_config: ConfigFactory, receiver: HttpReceiver, tmp_path: Path
) -> None:
    clock = Clock()
    slack = {
        "notify_webhook": {
            "enabled": True,
            "format": "slack",
            "language": "en",
            "url": receiver.url + "/services/T0/B0/x",
        }
    }
    rt = _runtime(make_config, slack, clock)
    try:
        attention.report(
            rt.engine,
            Problem(
                key="wms_mismatch:<9>",
                kind="wms_mismatch",
                subject="S<9>&",
                reason="a < b",
                fix="do x",
            ),
            now=clock(),
        )
        _notifier(rt).run_once()
    finally:
        rt.close()
    [request] = receiver.requests
    assert request.headers["Content-Type"].startswith("application/json")
    text = json.loads(request.body)["text"]
    assert text.startswith("[Action needed] WMS mismatch: S&lt;9&gt;&amp;")
    assert "Fix: do x" in text and "<" not in text
    receiver.requests.clear()
    chatwork = {
        "notify_webhook": {
            "enabled": True,
            "format": "chatwork",
            "room_id": "4242",
            "chatwork_base": receiver.url,
            "token": "cw-token-1",
        }
    }
    rt = _runtime(make_config, chatwork, clock)
    try:
        attention.report(rt.engine, _problem(8), now=clock())
        _notifier(rt).run_once()
    finally:
        rt.close()
    [request] = receiver.requests
    assert request.path == "/v2/rooms/4242/messages"
    assert request.headers["X-ChatWorkToken"] == "cw-token-1"
    from urllib.parse import parse_qs

    body = parse_qs(request.body.decode())["body"][0]
    assert body.startswith("[info][title]【要対応】WMSとの不一致: S8 (ITAKU)[/title]")
    assert body.endswith("[/info]")


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


def test_email_in_japanese_over_starttls_with_a_password_from_the_credential(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    clock = Clock()
    tls, cert = _self_signed(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "notify-email-password").write_text("mail-pass-1\n", encoding="utf-8")
    with smtp_receiver(tls_context=tls, password="mail-pass-1") as smtp:
        email = {
            "notify_email": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "starttls",
                "username": "nebridge",
                "from": "nebridge@shop.example",
                "ca_file": str(cert),
                "to": ["staff@shop.example", "wh@shop.example"],
                "subject_prefix": "[店舗] ",
            }
        }
        rt = _runtime(make_config, email, clock, credentials_dir=str(credentials))
        try:
            attention.report(rt.engine, _problem(61), now=clock())
            report = _notifier(rt).run_once()
        finally:
            rt.close()
    assert report.sent == 1, report.errors
    assert smtp.logins == ["nebridge"]
    [message] = smtp.messages
    raw_headers = smtp.raw[0].split(b"\r\n\r\n", 1)[0].decode("ascii")  # 7-bit on the wire
    assert "Subject: =?utf-8?" in raw_headers
    assert message["Subject"] == "[店舗] 【要対応】WMSとの不一致: S61 (ITAKU)"
    assert message["To"] == "staff@shop.example, wh@shop.example"
    assert message["Content-Transfer-Encoding"] == "base64"
    assert message.get_content_charset() == "utf-8"
    body = message.get_content()
    assert body.startswith("対応が必要なことが発生しました。")
    assert "拠点: ITAKU" in body and "対処: check schedule S61 in Logikura" in body
    assert message["Message-ID"].endswith("@shop.example>")


def test_email_in_english_without_tls(make_config: ConfigFactory) -> None:
    clock = Clock()
    with smtp_receiver() as smtp:
        email = {
            "notify_email": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from": "nb@x.example",
                "to": ["a@x.example"],
                "language": "en",
            }
        }
        rt = _runtime(make_config, email, clock)
        try:
            attention.report(rt.engine, _problem(1), now=clock())
            _notifier(rt).run_once()
            attention.resolve(rt.engine, ["wms_mismatch:1"])
            _notifier(rt).run_once()
        finally:
            rt.close()
    subjects = [m["Subject"] for m in smtp.messages]
    assert subjects == [
        "[nebridge] [Action needed] WMS mismatch: S1 (ITAKU)",
        "[nebridge] [Resolved] WMS mismatch: S1 (ITAKU)",
    ]
    assert "This is resolved" in smtp.messages[1].get_content()


# -- rules ------------------------------------------------------------------------------------


def test_once_per_key_reminder_after_a_day_and_resolved(
    make_config: ConfigFactory, receiver: HttpReceiver, database_url: str
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock, database_url=database_url)
    try:
        notifier = _notifier(rt)
        attention.report(rt.engine, _problem(1), now=clock())
        notifier.run_once()
        for _ in range(3):  # the problem is reported again and again: still one message
            clock.advance(hours=2)
            attention.report(rt.engine, _problem(1), now=clock())
            notifier.run_once()
        assert [b["event"] for b in _bodies(receiver)] == ["open"]
        clock.advance(hours=18, seconds=1)  # 24 h after the message
        notifier.run_once()
        notifier.run_once()
        assert [b["event"] for b in _bodies(receiver)] == ["open", "reminder"]
        attention.resolve(rt.engine, ["wms_mismatch:1"], clock())
        notifier.run_once()
        notifier.run_once()
        # the same key coming back is a new problem
        attention.report(rt.engine, _problem(1), now=clock())
        notifier.run_once()
    finally:
        rt.close()
    assert [(b["event"], b["key"]) for b in _bodies(receiver)] == [
        ("open", "wms_mismatch:1"),
        ("reminder", "wms_mismatch:1"),
        ("resolved", "wms_mismatch:1"),
        ("open", "wms_mismatch:1"),
    ]


def test_many_problems_at_once_are_one_digest_and_one_resolved_message(
    make_config: ConfigFactory, receiver: HttpReceiver, database_url: str
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock, database_url=database_url)
    try:
        notifier = _notifier(rt)
        with write_session(rt.engine) as session:
            for n in range(1000):
                session.add(
                    ImportedOrder(
                        ne_order_id=str(5000 + n),
                        warehouse="ITAKU",
                        state="held",
                        hold_reason="product X9 unknown",
                        updated_at=clock(),
                    )
                )
        notifier.run_once()
        [digest] = _bodies(receiver)
        assert digest["event"] == "digest" and digest["count"] == 1000
        assert len(digest["lines"]) == 20 and "ほか980件" in digest["text"]
        assert digest["warehouse"] == "ITAKU"
        # a trickle right after a digest waits for the window, then is one more digest
        clock.advance(minutes=1)
        for n in range(3):
            attention.report(rt.engine, _problem(n), now=clock())
        assert notifier.run_once().deferred == 3
        assert len(receiver.requests) == 1
        clock.advance(minutes=5)
        notifier.run_once()
        assert [b["event"] for b in _bodies(receiver)] == ["digest", "open", "open", "open"]
        # every held order shipped: one resolved message for all of them
        with write_session(rt.engine) as session:
            for order in session.scalars(select(ImportedOrder)):
                order.state = "instructed"
                session.add(order)
        notifier.run_once()
    finally:
        rt.close()
    last = _bodies(receiver)[-1]
    assert (last["event"], last["count"]) == ("resolved", 1000)
    assert len(receiver.requests) == 5


def test_up_to_the_threshold_each_problem_is_its_own_message(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock, notify={"digest_threshold": 3})
    try:
        notifier = _notifier(rt)
        for n in range(3):
            attention.report(rt.engine, _problem(n), now=clock())
        notifier.run_once()
        assert [b["event"] for b in _bodies(receiver)] == ["open"] * 3
        attention.report(rt.engine, _problem(3), now=clock())  # the 4th within 5 min
        notifier.run_once()
    finally:
        rt.close()
    last = _bodies(receiver)[-1]
    assert (last["event"], last["count"]) == ("digest", 1)


# -- failing sinks and crashes ----------------------------------------------------------------


def test_a_failing_sink_is_retried_with_backoff_and_never_blocks_another(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    with smtp_receiver() as smtp:
        plugins = {
            **_json_sink(receiver.url),
            "notify_email": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from": "nb@x.example",
                "to": ["a@x.example"],
            },
        }
        rt = _runtime(make_config, plugins, clock)
        try:
            notifier = _notifier(rt)
            receiver.statuses = [500, 503, 500]
            attention.report(rt.engine, _problem(1), now=clock())
            first = notifier.run_once()
            assert (first.sent, first.failed) == (1, 1)  # e-mail went out; the webhook failed
            assert "HTTP 500" in first.errors[0]
            assert notifier.run_once().failed == 0  # waiting for its backoff (30 s)
            clock.advance(seconds=30)
            assert notifier.run_once().failed == 1
            clock.advance(seconds=60)
            assert notifier.run_once().failed == 1  # third failure in a row
            items = attention.collect(rt.engine).items
            failing = [i for i in items if i.key == failing_key("notify_webhook")]
            assert failing and "notify test --plugin notify_webhook" in failing[0].fix
            clock.advance(seconds=120)
            done = notifier.run_once()
            assert done.sent >= 1 and done.failed == 0
            assert failing_key("notify_webhook") not in {
                i.key for i in attention.collect(rt.engine).items
            }
            notifier.run_once()
        finally:
            rt.close()
    events = [(b["event"], b["key"]) for b in _bodies(receiver)]
    assert events.count(("open", "wms_mismatch:1")) == 1
    # the e-mail sink was told that the webhook failed, and that it works again
    subjects = [m["Subject"] for m in smtp.messages]
    assert sum("通知の送信失敗" in s for s in subjects) == 2


def test_refused_and_slow_sinks_fail_within_their_timeout_and_are_retried(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    closed = f"http://127.0.0.1:{free_port()}/hook"
    rt = _runtime(make_config, _json_sink(closed), clock)
    try:
        attention.report(rt.engine, _problem(1), now=clock())
        refused = _notifier(rt).run_once()
        assert refused.failed == 1 and "cannot connect to 127.0.0.1" in refused.errors[0]
        assert "/hook" not in refused.errors[0]  # the URL (a secret for Slack) is not shown
    finally:
        rt.close()
    receiver.delay_seconds = 3.0
    clock.advance(seconds=30)  # its backoff
    rt = _runtime(make_config, _json_sink(receiver.url, timeout_seconds=0.5), clock)
    try:
        slow = _notifier(rt).run_once()
        assert slow.failed == 1 and "did not answer within 0.5 s" in slow.errors[0]
        receiver.delay_seconds = 0
        clock.advance(seconds=60)
        assert _notifier(rt).run_once().sent == 1
    finally:
        rt.close()
    # the slow receiver may still have taken the first copy: the same delivery key lets it
    # drop the second (the one case a copy can reach a sink)
    bodies = _bodies(receiver)
    assert {b["key"] for b in bodies} == {"wms_mismatch:1"} and 1 <= len(bodies) <= 2
    assert len({b["delivery_key"] for b in bodies}) == 1


def test_a_crash_between_storing_and_sending_delivers_exactly_once(
    make_config: ConfigFactory, receiver: HttpReceiver, database_url: str
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock, database_url=database_url)
    try:
        attention.report(rt.engine, _problem(1), now=clock())
        attention.report(rt.engine, _problem(2), now=clock())
        assert _notifier(rt).scan() == (2, 0)  # stored; the process dies before sending
        with write_session(rt.engine) as session:  # and one was handed to the sink already
            first = session.get(NotifyDelivery, 1)
            assert first is not None
            first.state, first.attempts = "in_flight", 1
            session.add(first)
    finally:
        rt.close()
    assert receiver.requests == []
    rt = _runtime(
        make_config, _json_sink(receiver.url), clock, database_url=database_url
    )  # the restart
    try:
        notifier = _notifier(rt)
        assert notifier.recover() == 1
        notifier.run_once()
        notifier.run_once()
        clock.advance(days=2)
        attention.report(rt.engine, _problem(1), now=clock())
        attention.report(rt.engine, _problem(2), now=clock())
        notifier.run_once()
    finally:
        rt.close()
    bodies = _bodies(receiver)
    opens = sorted(b["key"] for b in bodies if b["event"] == "open")
    assert opens == ["wms_mismatch:1", "wms_mismatch:2"]
    assert len({b["delivery_key"] for b in bodies}) == len(bodies)


# -- commands ---------------------------------------------------------------------------------


def test_notify_test_and_list(make_config: ConfigFactory, receiver: HttpReceiver) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    path = make_config(plugins={**DEFAULT_PLUGINS, **_json_sink(receiver.url)})
    runner = CliRunner()
    sent = runner.invoke(app, ["-c", str(path), "notify", "test", "--json"])
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout) == [{"sink": "notify_webhook", "ok": True, "error": ""}]
    assert json.loads(receiver.requests[0].body)["event"] == "test"
    wrong = runner.invoke(app, ["-c", str(path), "notify", "test", "--plugin", "notify_email"])
    assert wrong.exit_code == 2 and "nebridge plugins enable notify_email" in wrong.output
    path = make_config(plugins={**DEFAULT_PLUGINS, **_json_sink(closed)})
    failed = runner.invoke(app, ["-c", str(path), "notify", "test"])
    assert failed.exit_code == 1 and "notify_webhook: FAILED" in failed.output
    listed = runner.invoke(app, ["-c", str(path), "notify", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["event"] for r in rows] == ["test", "test"]
    assert [r["deliveries"][0]["state"] for r in rows] == ["failed", "sent"]
    human = runner.invoke(app, ["-c", str(path), "notify", "list"])
    assert human.exit_code == 0 and "notify_webhook failed" in human.output


def test_a_long_database_outage_is_told_without_the_database_then_resolved(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock)
    try:
        alarm = OutageAlarm(rt.host, rt.config.notify, rt.notify_context, clock)
        assert alarm.check(None) == []
        assert alarm.check(9 * 60, "connection refused") == []  # not yet 10 minutes
        assert receiver.requests == []
        receiver.statuses = [500]
        assert alarm.check(10 * 60, "connection refused")[0].startswith("notify_webhook")
        assert alarm.check(11 * 60, "connection refused") == []  # told now
        assert alarm.check(12 * 60, "connection refused") == []  # and only once
        assert alarm.check(None) == []
        assert alarm.check(None) == []
    finally:
        rt.close()
    bodies = _bodies(receiver)
    assert [(b["event"], b["key"]) for b in bodies] == [
        ("open", "database_unreachable"),
        ("resolved", "database_unreachable"),
    ]
    assert "connection refused" in bodies[0]["detail"] and "nothing is" in bodies[0]["detail"]
    assert "データベース接続不可" in bodies[0]["subject"]


def test_after_a_sink_outage_everything_that_waited_goes_out_once_in_one_run(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock)
    try:
        notifier = _notifier(rt)
        receiver.statuses = [503] * 1000  # down
        for minute in range(10):
            attention.report(rt.engine, _problem(minute), now=clock())
            for _ in range(2):
                notifier.run_once()
                clock.advance(seconds=30)
        assert receiver.requests == []
        receiver.statuses = []  # back
        clock.advance(minutes=5)  # the longest backoff
        report = notifier.run_once()
        assert (report.sent, report.failed) == (10, 0)
        assert notifier.run_once().sent == 0
    finally:
        rt.close()
    assert sorted(b["key"] for b in _bodies(receiver)) == sorted(
        f"wms_mismatch:{n}" for n in range(10)
    )


def test_the_running_daemon_tells_staff_about_a_rejected_file(
    make_config: ConfigFactory, receiver: HttpReceiver, tmp_path: Path
) -> None:
    config = make_config(
        plugins={**DEFAULT_PLUGINS, **_json_sink(receiver.url)}, notify={"interval_seconds": 0.5}
    )
    inbox = tmp_path / "wms" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "shipments-bad.csv").write_text("not,a,shipment,header\n1,2,3,4\n", encoding="utf-8")
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    bodies = _bodies(receiver)
    assert [(b["event"], b["kind"]) for b in bodies] == [("open", "rejected_file")], (
        tmp_path / "daemon.log"
    ).read_text()
    assert "shipments-bad.csv" in bodies[0]["ids"][0]
    assert "nebridge inbox retry" in bodies[0]["fix"]


def test_a_failing_sink_shows_in_status_and_doctor(make_config: ConfigFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    path = make_config(
        plugins={**DEFAULT_PLUGINS, **_json_sink(closed)}, notify={"failing_after_attempts": 1}
    )
    rt = build_runtime(path)
    try:
        attention.report(rt.engine, _problem(1))
        assert rt.notifier().run_once().failed == 1
    finally:
        rt.close()
    runner = CliRunner()
    status = runner.invoke(app, ["-c", str(path), "status", "--json"])
    data = json.loads(status.stdout)
    assert data["notify"] == {"sinks": ["notify_webhook"], "waiting": {"notify_webhook": 1}}
    assert data["attention"]["counts"]["notify_failing"] == 1
    human = runner.invoke(app, ["-c", str(path), "status"])
    assert "notifications: notify_webhook (1 waiting for notify_webhook)" in human.output
    doctor = runner.invoke(app, ["-c", str(path), "doctor", "--offline"])
    assert "1 notify failing" in doctor.output


def test_run_once_sends_notifications_and_reports_them(
    make_config: ConfigFactory, receiver: HttpReceiver, tmp_path: Path
) -> None:
    path = make_config(plugins={**DEFAULT_PLUGINS, **_json_sink(receiver.url)})
    inbox = tmp_path / "wms" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "receipts-bad.csv").write_text("nonsense\n1\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["-c", str(path), "run", "--once", "--json"])
    assert done.exit_code == 1  # something waits for a person
    report = json.loads(done.stdout)
    assert report["notify"] == {"created": 1, "sent": 1, "failed": 0, "deferred": 0, "errors": []}
    assert [b["kind"] for b in _bodies(receiver)] == ["rejected_file"]
    dry = CliRunner().invoke(app, ["-c", str(path), "run", "--once", "--dry-run", "--json"])
    assert json.loads(dry.stdout)["notify"] is None  # a dry run sends nothing


def test_many_problems_still_open_are_one_reminder(
    make_config: ConfigFactory, receiver: HttpReceiver
) -> None:
    clock = Clock()
    rt = _runtime(make_config, _json_sink(receiver.url), clock, notify={"digest_threshold": 2})
    try:
        notifier = _notifier(rt)
        for n in range(3):
            attention.report(rt.engine, _problem(n), now=clock())
        notifier.run_once()
        clock.advance(hours=24)
        notifier.run_once()
    finally:
        rt.close()
    assert [(b["event"], b["count"]) for b in _bodies(receiver)] == [("digest", 3), ("reminder", 3)]


def test_email_over_implicit_tls_refuses_an_untrusted_certificate(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    clock = Clock()
    tls, cert = _self_signed(tmp_path)
    with smtp_receiver(tls_context=tls, implicit_tls=True) as smtp:
        email = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "tls",
            "from": "nb@x.example",
            "to": ["a@x.example"],
        }
        rt = _runtime(make_config, {"notify_email": email}, clock)  # the system's CAs only
        try:
            attention.report(rt.engine, _problem(1), now=clock())
            refused = _notifier(rt).run_once()
        finally:
            rt.close()
        assert refused.failed == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.errors[0]
        assert smtp.messages == []
        clock.advance(minutes=1)
        rt = _runtime(make_config, {"notify_email": {**email, "ca_file": str(cert)}}, clock)
        try:
            assert _notifier(rt).run_once().sent == 1
        finally:
            rt.close()
    subjects = [m["Subject"] for m in smtp.messages]
    assert subjects == ["[nebridge] 【要対応】WMSとの不一致: S1 (ITAKU)"]


def test_email_options_are_checked_at_the_boundary(make_config: ConfigFactory) -> None:
    email = {
        "enabled": True,
        "host": "127.0.0.1",
        "security": "none",
        "from": "nb@x.example",
        "to": ["a@x.example", "b@x.example, c@x.example"],
    }
    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "notify_email": email})
    done = CliRunner().invoke(app, ["-c", str(path), "config", "check"])
    assert done.exit_code == 1
    assert (
        "line 14: plugins.notify_email.to[1]: 'b@x.example, c@x.example' is not one e-mail "
        "address" in done.output
    )
    email = {**email, "to": ["a@x.example"], "username": "u"}
    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "notify_email": email})
    done = CliRunner().invoke(app, ["-c", str(path), "config", "check"])
    assert done.exit_code == 1 and "never sent unencrypted" in done.output


def test_a_bad_webhook_url_is_refused_without_showing_it(make_config: ConfigFactory) -> None:
    hook = {"enabled": True, "format": "slack", "url": "hooks.slack.com/services/T0/B0/SECRET"}
    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "notify_webhook": hook})
    done = CliRunner().invoke(app, ["-c", str(path), "config", "check"])
    assert done.exit_code == 1 and "plugins.notify_webhook.url" in done.output
    assert "SECRET" not in done.output


def test_every_attention_kind_has_a_name_in_japanese_and_english() -> None:
    for kind in AttentionKind:
        assert kind_label(kind, "ja") != kind, f"add {kind} to hooks.notify._KINDS"
        assert kind_label(kind, "en") != kind.replace("_", " ")
