"""PostgreSQL as an admin meets it (issue #13, findings 1-3).

Without the driver, with the server down or the database missing, every command prints one
line naming host, port and database and what to do; never the password, never a traceback.
The instance lock is keyed on what the server says the database is, so two spellings of one
URL share it; losing it (a TCP proxy cut under the client) fences Next Engine calls at once,
a standby takes over, and the daemon resumes by itself, logging the outage once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import col, select
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import load_config
from daemon.instancelock import InstanceLock, InstanceLockLost
from daemon.runtime import build_runtime
from daemon.store.engine import make_engine, read_session
from daemon.store.models import InboxEvent, NeLink
from tests.conftest import ConfigFactory, fresh_schema, pg_base
from tests.ne_world import AT, RECEIPT_HEADER, make_world
from tests.pgproxy import TcpProxy

PASSWORD = "s3cret-Pa55word"
COMMANDS: list[list[str]] = [
    ["status"],
    ["inbox", "list"],
    ["outbox", "list"],
    ["history", "--order", "1"],
    ["run", "--once"],
    ["unlink"],
    ["db", "current"],
    ["db", "upgrade"],
    ["connect"],
    ["attention"],
    ["orders", "list"],
    ["wms", "status"],
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spelled(base: str, schema: str, *, host: str | None = None, port: int | None = None) -> str:
    """``base`` reaching ``schema``, with the host and port written as asked."""
    url = make_url(base)
    url = url.set(host=host or url.host, port=port if port is not None else url.port)
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema in the test database (one nebridge installation)."""
    with fresh_schema("nbpg_") as name:
        yield name


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output and PASSWORD not in output
    return lines[0]


# -- finding 1: install and errors ------------------------------------------------------------

BLOCK_PSYCOPG = """
import importlib.abc, json, sys

class NoPsycopg(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg", "psycopg_binary", "psycopg_c", "psycopg2"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPsycopg())
if sys.argv[1] == "--each":  # many commands in one process (each through the real CLI app)
    from typer.testing import CliRunner
    from daemon.cli import app
    results = []
    for command in json.loads(sys.argv[3]):
        result = CliRunner().invoke(app, ["--config", sys.argv[2], *command])
        results.append([command, result.exit_code, result.stderr, result.stdout])
    print(json.dumps(results))
else:  # the console script itself
    sys.argv = ["nebridge", *sys.argv[1:]]
    from daemon.cli import main
    main()
"""


def test_without_the_driver_every_command_names_the_extra(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(
        migrate=False,
        database_url=(f"postgresql+psycopg://nebridge:{PASSWORD}@db.example.invalid:5432/nebridge"),
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    each = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_PSYCOPG,
            "--each",
            str(config),
            json.dumps([*COMMANDS, ["config", "check"]]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert each.returncode == 0, each.stderr
    results = json.loads(each.stdout)
    assert len(results) == len(COMMANDS) + 1
    for command, code, stderr, stdout in results:
        assert code == 1, (command, stderr, stdout)
        assert "Traceback" not in stderr and PASSWORD not in stderr + stdout, (command, stderr)
        assert "pip install 'nebridge[postgres]'" in stderr, (command, stderr)
        if command != ["config", "check"]:  # which lists it among the file's problems
            one_line_error(stderr)
    for command in (["status"], ["run"]):  # the console script: command and daemon
        done = subprocess.run(
            [sys.executable, "-c", BLOCK_PSYCOPG, "--config", str(config), *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        line = one_line_error(done.stderr)
        assert "pip install 'nebridge[postgres]'" in line, (command, line)


def test_server_down_every_command_says_one_line(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    config = make_config(
        migrate=False,
        database_url=(f"postgresql+psycopg://nebridge:{PASSWORD}@127.0.0.1:{port}/nebridge"),
    )
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(app, ["--config", str(config), *command])
        assert result.exit_code == 1, (command, result.output, result.exception)
        line = one_line_error(result.stderr)
        assert f"'nebridge' on 127.0.0.1:{port}" in line, line
        assert f"pg_isready -h 127.0.0.1 -p {port}" in line, line
    daemon = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert daemon.returncode == 1
    line = one_line_error(daemon.stderr)
    assert (
        f"cannot start: cannot reach the PostgreSQL database 'nebridge' on 127.0.0.1:{port}" in line
    )


def test_a_missing_database_says_createdb(make_config: ConfigFactory) -> None:
    url = make_url(pg_base())
    missing = url.set(database=f"nebridge_missing_{uuid.uuid4().hex[:8]}", password=PASSWORD)
    config = make_config(migrate=False, database_url=missing.render_as_string(hide_password=False))
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(app, ["--config", str(config), *command])
        assert result.exit_code == 1, (command, result.output, result.exception)
        line = one_line_error(result.stderr)
        assert f"createdb -h {url.host} -p {url.port or 5432}" in line, line
        assert str(missing.database) in line


# -- finding 3: one working process per database, whatever the URL says ----------------------


def test_two_spellings_of_one_database_share_one_lock(
    make_config: ConfigFactory, schema: str
) -> None:
    base = pg_base()
    port = make_url(base).port or 5432
    first = spelled(base, schema, host="127.0.0.1")
    second = spelled(base, schema, host="localhost", port=port)
    assert first != second
    config = load_config(make_config(database_url=first)).config
    engines = [make_engine(first), make_engine(second), make_engine(base)]
    locks = [InstanceLock(config, e) for e in engines]
    try:
        assert locks[0].try_acquire()
        assert not locks[1].try_acquire()  # the same database, spelled differently
        assert locks[0].identity == locks[1].identity
        assert "held by nebridge@" in locks[1].refusal()
        assert locks[2].try_acquire()  # another installation (schema) in the same database
        locks[0].release()
        assert locks[1].try_acquire()
    finally:
        for lock in locks:
            lock.release()
        for engine in engines:
            engine.dispose()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_lost_lock_fences_next_engine_calls_until_it_is_taken_again(
    make_config: ConfigFactory, tmp_path: Path, schema: str
) -> None:
    base = pg_base()
    target = make_url(base)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        via_proxy = spelled(base, schema, host="127.0.0.1", port=proxy.port)
        direct = spelled(base, schema, host="localhost", port=target.port or 5432)
        worlds = contextmanager(make_world)(make_config, tmp_path, database_url=via_proxy)
        world = worlds.__enter__()
        runtime = build_runtime(world.config)
        losses: list[str] = []
        lock = InstanceLock(runtime.config, runtime.engine, on_lost=losses.append)
        other_engine = make_engine(direct)
        other = InstanceLock(runtime.config, other_engine)
        runtime.fence = lock.lost
        try:
            assert lock.try_acquire()
            runtime.ne_client().company_info()
            calls = world.sandbox.state.traffic.calls

            proxy.stop()  # the database connection drops under the running client
            wait_until(lambda: losses, "the loss to be noticed")
            assert lock.lost() is not None and "dropped" in losses[0]
            with pytest.raises(InstanceLockLost):
                runtime.ne_client().company_info()
            assert world.sandbox.state.traffic.calls == calls  # nothing was sent

            wait_until(other.try_acquire, "the other spelling to take the free lock")
            proxy.start()
            assert not lock.try_acquire()  # held elsewhere now: this one waits
            assert lock.lost() is not None
            other.release()
            assert lock.try_acquire()
            assert lock.lost() is None
            runtime.ne_client().company_info()
            assert world.sandbox.state.traffic.calls == calls + 1
        finally:
            lock.release()
            other.release()
            other_engine.dispose()
            runtime.close()
            worlds.__exit__(None, None, None)


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def log_has(log: Path, text_: str) -> Callable[[], bool]:
    return lambda: text_ in log.read_text(encoding="utf-8", errors="replace")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def drop_receipt(tmp_path: Path, receipt_id: str) -> None:
    inbox = tmp_path / "wms" / "inbox"
    part = inbox / f".{receipt_id}.part"
    part.write_text(f"{RECEIPT_HEADER}\n{receipt_id},ITAKU,{AT},P-1,2\n", encoding="utf-8")
    part.rename(inbox / f"receipts-{receipt_id}.csv")


def receipts(engine: Engine) -> list[str]:
    with read_session(engine) as session:
        return sorted(session.scalars(select(col(InboxEvent.external_id))))


def test_daemon_survives_a_database_cut_and_a_standby_takes_over(
    make_config: ConfigFactory, tmp_path: Path, schema: str
) -> None:
    base = pg_base()
    target = make_url(base)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        first = make_config(database_url=spelled(base, schema, host="127.0.0.1", port=proxy.port))
        second = tmp_path / "standby.yaml"
        second.write_text(
            first.read_text(encoding="utf-8").replace(
                spelled(base, schema, host="127.0.0.1", port=proxy.port),
                spelled(base, schema, host="localhost", port=target.port or 5432),
            ),
            encoding="utf-8",
        )
        inbox = tmp_path / "wms" / "inbox"
        inbox.mkdir(parents=True)
        (inbox / "products.csv").write_text("product_code,link_code\nP-1,G-1\n", encoding="utf-8")
        log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
        a = start_daemon(first, log_a)
        b: subprocess.Popen[bytes] | None = None
        try:
            wait_until(log_has(log_a, "nebridge running"), "the first daemon to run")
            b = start_daemon(second, log_b)
            wait_until(log_has(log_b, "standby:"), "the second daemon to wait as a standby")
            assert not log_has(log_b, "nebridge running")()

            proxy.stop()  # the first daemon's database goes away
            wait_until(log_has(log_a, "lost the instance lock"), "the loss to be noticed")
            wait_until(log_has(log_b, "took over the instance lock"), "the standby to take over")
            wait_until(log_has(log_a, "database unavailable"), "the outage to be logged")
            drop_receipt(tmp_path, "R-DURING")  # the WMS goes on meanwhile
            time.sleep(3)  # let the first daemon retry a few times while the database is away
            proxy.start()
            wait_until(log_has(log_a, "standby:"), "the first daemon to wait as a standby")

            assert stop(b) == 0
            wait_until(log_has(log_a, "work resumes"), "the first daemon to resume")
            drop_receipt(tmp_path, "R-AFTER")
            engine = make_engine(spelled(base, schema))
            try:  # nothing lost, nothing doubled
                wait_until(
                    lambda: receipts(engine) == ["R-AFTER", "R-DURING"],
                    "both receipts to be taken once",
                )
            finally:
                engine.dispose()
            assert a.poll() is None
        finally:
            if b is not None:
                stop(b)
            code = stop(a)
        assert code == 0
        text_a = log_a.read_text(encoding="utf-8")
        assert text_a.count("database unavailable") == 1, text_a
        assert "from the WMS failed" not in text_a and "Traceback" not in text_a, text_a
        assert "database reachable again after" in text_a


# -- finding 2: database outages --------------------------------------------------------------


def test_an_outage_is_logged_once_and_probed_with_backoff(
    make_config: ConfigFactory, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    from daemon.store.engine import DatabaseHealth, DatabaseUnavailable, database_health

    base = pg_base()
    target = make_url(base)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        engine = make_engine(spelled(base, schema, host="127.0.0.1", port=proxy.port))
        now = [0.0]
        health = database_health(engine)
        assert isinstance(health, DatabaseHealth)
        health.monotonic = lambda: now[0]
        health.still_down_every = 300.0

        def query() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        query()
        assert health.available()
        proxy.stop()
        with pytest.raises(DatabaseUnavailable, match=f"127.0.0.1:{proxy.port}"):
            query()
        caplog.clear()
        for second in range(0, 1200):  # twenty minutes of job runs, one a second
            now[0] = float(second)
            assert not health.available()
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        still = [r for r in caplog.records if "still unavailable" in r.getMessage()]
        assert len(errors) == 1 and "database unavailable" in errors[0].getMessage()
        assert "127.0.0.1" in errors[0].getMessage() and "WMS" not in errors[0].getMessage()
        assert 3 <= len(still) <= 4  # every 5 minutes, not every run
        proxy.start()
        now[0] += 61.0  # past the longest backoff
        assert health.available()
        assert any("reachable again after 21m" in r.getMessage() for r in caplog.records)
        query()
        engine.dispose()


def test_a_host_without_tokens_leaves_the_shared_link_alone(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    from daemon.admin import run_once
    from daemon.nelink import CONNECTED, link_info

    with contextmanager(make_world)(make_config, tmp_path) as world:
        runtime = build_runtime(world.config)
        runtime.config.token_file.unlink()  # the standby host that took over has no pair
        calls = world.sandbox.state.traffic.calls
        report = run_once(runtime)
        assert "this host has no Next Engine token pair" in " ".join(report.problems), report
        assert world.sandbox.state.traffic.calls == calls
        with read_session(runtime.engine) as session:  # the shared link: untouched
            link = session.get(NeLink, 1)
        assert link is not None and link.state == CONNECTED
        # this host's own view says what is missing here
        assert link_info(runtime.config, runtime.engine).reason == "the token file is missing"
        runtime.close()


def test_db_upgrade_never_migrates_under_a_working_process(
    make_config: ConfigFactory, database_url: str
) -> None:
    config_path = make_config(migrate=False, database_url=database_url)
    config = load_config(config_path).config
    engine = make_engine(database_url)
    holder = InstanceLock(config, engine)
    runner = CliRunner()
    try:
        assert holder.try_acquire()  # e.g. the daemon on the other host
        result = runner.invoke(app, ["--config", str(config_path), "db", "upgrade"])
        assert result.exit_code == 1, result.output
        assert "not migrating now: another nebridge process" in result.stderr
        assert "stop it first" in result.stderr
        holder.release()
        result = runner.invoke(app, ["--config", str(config_path), "db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert holder.try_acquire()
        result = runner.invoke(app, ["--config", str(config_path), "db", "upgrade"])
        assert result.exit_code == 0 and "already at the latest" in result.stderr  # reads only
    finally:
        holder.release()
        engine.dispose()


def test_two_spellings_of_one_sqlite_file_share_one_lock(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "db" / "nebridge.db"
    database.parent.mkdir()
    (tmp_path / "link").symlink_to(database.parent)
    monkeypatch.chdir(tmp_path)
    urls = [f"sqlite:///{database}", "sqlite:///link/nebridge.db"]
    config = load_config(make_config(database_url=urls[0])).config
    other_state = config.model_copy(update={"state_dir": tmp_path / "elsewhere"})
    engines = [make_engine(url) for url in urls]
    locks = [InstanceLock(config, engines[0]), InstanceLock(other_state, engines[1])]
    try:
        assert locks[0].try_acquire()
        assert not locks[1].try_acquire()  # another state_dir, the same database file
        assert f"(pid {os.getpid()})" in locks[1].refusal()
        locks[0].release()
        assert locks[1].try_acquire()
    finally:
        for lock in locks:
            lock.release()
        for engine in engines:
            engine.dispose()


def test_run_once_exits_75_when_its_lock_is_lost(
    make_config: ConfigFactory, tmp_path: Path, schema: str
) -> None:
    base = pg_base()
    target = make_url(base)
    with (
        TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy,
        contextmanager(make_world)(
            make_config,
            tmp_path,
            sandbox_options={"faults": {"latency_ms": 1500}},
            database_url=spelled(base, schema, host="127.0.0.1", port=proxy.port),
        ) as world,
    ):
        calls = world.sandbox.state.traffic.calls
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(world.config), "run", "--once"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            wait_until(
                lambda: world.sandbox.state.traffic.calls > calls, "run --once to call Next Engine"
            )
            proxy.stop()
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 75, err
        assert "lost the instance lock" in err and "exiting (status 75)" in err, err
