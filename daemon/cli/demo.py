"""``nebridge demo``: the whole product end to end against the Next Engine sandbox, checked.

In a fresh folder the demo copies the example ``daemon.yaml`` (the seed article's three
warehouses: 委託販売在庫 linked to Next Engine, 新宿拠点 and 浅草拠点 not), points it at a
sandbox it starts on loopback, switches on ``tag_filter`` to show it, signs in through the
sandbox's sign-in page, imports orders, cancels one and edits another's address in Next
Engine before the warehouse ships (``order_watch``: the WMS gets exactly the cancellation and
the re-instruction), plays the WMS (a product master whose link codes
differ in case from Next Engine's goods codes, shipment confirmations with and without
tracking numbers, shipments from other channels and receipts at every warehouse), runs the
pipelines until nothing is left to do, prints a per-warehouse summary and checks it against
the sandbox's own state and ledger. Notifications go through ``notify_webhook`` to a local
receiver standing in for the staff's chat room; the summary shows what arrived and checks that
every held order was told. Exit 1 if the check fails.

``--wms NAME`` runs the demo a WMS connector plugin offers instead (``nebridge_demos``, e.g.
``wms_logikura``'s): this module starts the Next Engine sandbox and lends the plugin a
:class:`hooks.surface.DemoContext` built from the same steps (installation, sign-in, engine
passes until quiet, ``wms connect``, what nebridge stored); it imports no plugin.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, NoReturn

import requests
import typer
from sqlmodel import col, select

from daemon.admin import RunOnceReport, run_once
from daemon.cli.common import display_zone, fail, info, print_table, times_in_zone
from daemon.cli.stock import show_diff
from daemon.cli.wms import wait_for_code
from daemon.config import ConfigError, DaemonConfig, LoadedConfig, load_config, read_yaml
from daemon.nelink import connect, sign_in_url, wait_for_redirect
from daemon.runtime import build_runtime
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.stock import diff_now, link_key_of, reconcile
from daemon.store.engine import make_engine, read_session, upgrade
from daemon.store.models import ImportedOrder, OutboxItem, OutboxState, WmsProduct
from daemon.yamledit import dump, write_atomically
from hooks.actions import ADJUST_STOCK, SHIP_ORDER
from hooks.connectors import AuthorizingConnector
from hooks.surface import DemoContext, DemoOrder, DemoOutboxItem, DemoStage, SurfaceError

#: The commented example configuration, shipped inside the package (the checkout's
#: ./daemon.yaml links to it), so the demo runs after a plain `pip install` too.
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "resources" / "daemon.yaml"
SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
MAX_PASSES = 8
UNLINKED_GOODS = "DEMO-NOLINK"
#: The address a person changes one imported order to before the warehouse ships it.
NEW_ADDRESS = "大阪府大阪市北区梅田1-1-1"


@dataclass
class Expected:
    """What the demo's WMS did, per warehouse, computed independently of nebridge."""

    shipped: dict[str, str | None] = field(default_factory=dict)  # order id -> tracking
    stock: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))


@dataclass
class StaffInbox:
    """The notifications the demo's local receiver got (JSON webhook bodies)."""

    url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def notify_receiver() -> Iterator[StaffInbox]:
    """A JSON webhook receiver on loopback standing in for the staff's chat room."""
    inbox = StaffInbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            inbox.messages.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass  # the demo prints what arrived itself

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}/staff"
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    tmp.rename(path)


def prepare_config(
    root: Path, sandbox: SandboxServer, configure_wms: Callable[[Any], None]
) -> Path:
    """The example daemon.yaml in ``root``, pointed at the NE sandbox; the WMS part is the
    caller's (``configure_wms`` edits the document)."""
    raw = read_yaml(EXAMPLE_CONFIG)
    raw["state_dir"] = str(root / "state")
    configure_wms(raw)
    ne = raw["nextengine"]
    ne["api_base"] = ne["login_base"] = sandbox.base_url
    ne["redirect_uri"] = f"http://127.0.0.1:{free_port()}/callback"
    raw["dispatch"] = {"queue_poll_seconds": 0.3}
    raw["plugins"]["tag_filter"]["enabled"] = True
    path = root / "daemon.yaml"
    write_atomically(path, dump(raw))
    return path


def start_linked(config_path: Path, sandbox: SandboxServer) -> LoadedConfig:
    """Load and migrate the configuration, then sign in through the sandbox."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    engine = make_engine(loaded.config.resolved_database_url)
    upgrade(engine)
    company = _sign_in(loaded.config, engine)
    engine.dispose()
    info(f"… signed in to Next Engine: {company}")
    return loaded


def plant_unlinked_order(sandbox: SandboxServer) -> None:
    """An order whose goods no WMS product links: the demo checks that it ends held."""
    sandbox.state.create_goods(UNLINKED_GOODS, quantity=5)
    sandbox.state.create_order([(UNLINKED_GOODS, 1)], shop_id=1, tag="[ロジクラ受注取込対象]")


def _csv_folders(root: Path) -> Callable[[Any], None]:
    def configure(raw: Any) -> None:
        raw["wms"]["csv"]["inbox"] = str(root / "wms" / "inbox")
        raw["wms"]["csv"]["outbox"] = str(root / "wms" / "outbox")
        raw["wms"]["csv"]["stable_seconds"] = 0.2

    return configure


def _sign_in(config: DaemonConfig, engine: Any) -> str:
    """Sign in through the sandbox's page as a browser would; return the company name."""
    received: dict[str, tuple[str, str]] = {}
    receiver = threading.Thread(
        target=lambda: received.setdefault(
            "pair", wait_for_redirect(config.nextengine.redirect_uri, 30)
        ),
        daemon=True,
    )
    receiver.start()
    for _ in range(50):
        try:
            requests.get(sign_in_url(config) + "&auto=1", timeout=10)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    receiver.join(30)
    if "pair" not in received:
        fail("the sandbox sign-in did not reach nebridge's redirect receiver")
    return connect(config, engine, *received["pair"]).company_name


def _products(sandbox: SandboxServer) -> list[tuple[str, str]]:
    """A WMS product per sandbox goods; every third link code in another letter case."""
    codes = sorted(
        str(g["goods_id"])
        for g in (sandbox.state.goods_snapshot(k) for k in list(sandbox.state.goods))
    )
    out = []
    for i, code in enumerate(codes):
        link = code.swapcase() if i % 3 == 0 else code
        out.append((f"WMS-{i:03d}", link))
    return out


def _outbox_files(root: Path) -> list[Path]:
    """The files nebridge wrote for the WMS, in the order a WMS processes them: in the order
    they were written (the names' times have whole seconds only: an import and the
    cancellation after it are often written in the same second)."""
    paths = [
        *(root / "wms" / "outbox").glob("cancellations-*.csv"),
        *(root / "wms" / "outbox").glob("orders-*.csv"),
    ]
    return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _wms_orders(root: Path) -> dict[str, list[dict[str, str]]]:
    """The orders the demo's WMS holds: every order file, less what a cancellation file drops
    (an edited order comes back with its new content in a later order file)."""
    held: dict[str, list[dict[str, str]]] = {}
    for path in _outbox_files(root):
        rows = _read_rows(path)
        if path.name.startswith("cancellations-"):
            for row in rows:
                held.pop(row["ne_order_id"], None)
            continue
        by_order: dict[str, list[dict[str, str]]] = defaultdict(list)
        for line in rows:
            by_order[line["ne_order_id"]].append(line)
        held.update(by_order)
    return held


def _play_changes(
    root: Path, sandbox: SandboxServer, config_path: Path
) -> tuple[list[RunOnceReport], str, str]:
    """Before the warehouse ships, a person cancels one imported order and changes another's
    address in Next Engine; ``order_watch`` tells the WMS."""
    orders = sorted(_wms_orders(root), key=int)
    if len(orders) < 2:
        fail("demo check failed: fewer than two orders were imported to cancel and edit")
    cancel, edit = orders[0], orders[1]
    sandbox.state.human_edit(int(cancel), {"receive_order_cancel_type_id": "1"})
    sandbox.state.human_edit(int(edit), {"receive_order_consignee_address1": NEW_ADDRESS})
    info(
        f"… before the warehouse ships, a person cancels order {cancel} and changes the "
        f"address of order {edit} in Next Engine (plugin order_watch)"
    )
    return _until_quiet(config_path), cancel, edit


def _check_changes(root: Path, sandbox: SandboxServer, cancel: str, edit: str) -> list[str]:
    """The WMS got exactly the cancellation and the re-instruction; Next Engine shipped
    neither the cancelled order nor the old version of the edited one."""
    problems = []
    files = _outbox_files(root)
    got = sorted(
        (r["ne_order_id"], r["reason"])
        for p in files
        if p.name.startswith("cancellations-")
        for r in _read_rows(p)
    )
    if got != sorted([(cancel, "cancelled"), (edit, "edited")]):
        problems.append(
            f"the WMS got cancellations {got}, not exactly order {cancel} "
            f"(cancelled) and order {edit} (edited)"
        )
    names = [p.name for p in files]
    sent = [
        i
        for i, p in enumerate(files)
        if p.name.startswith("orders-") and any(r["ne_order_id"] == edit for r in _read_rows(p))
    ]
    dropped = [i for i, n in enumerate(names) if n.startswith("cancellations-")]
    if len(sent) != 2 or not dropped or not dropped[0] < sent[1]:
        problems.append(
            f"order {edit} was not instructed, cancelled, then instructed again "
            "with its new content, in that order"
        )
    lines = _wms_orders(root).get(edit, [])
    if not lines or not all(r["consignee_address"].startswith(NEW_ADDRESS) for r in lines):
        problems.append(f"the WMS does not hold order {edit} with its new address")
    shipped = sandbox.ledger.shipped_order_ids()
    if int(cancel) in shipped:
        problems.append(f"Next Engine shipped order {cancel}, cancelled before it shipped")
    if shipped.count(int(edit)) != 1:
        problems.append(
            f"Next Engine shipped the edited order {edit} "
            f"{shipped.count(int(edit))} time(s), not once with its new content"
        )
    if not problems:
        info(
            f"order watch check passed: the WMS dropped order {cancel}, got order {edit} "
            "again with its new address after its cancellation, and Next Engine shipped "
            "neither the cancelled order nor the old version of the edited one"
        )
    return problems


def _play_shipments(root: Path, products: list[tuple[str, str]], expected: Expected) -> int:
    """Confirm every order the WMS holds (half with tracking) plus shipments of other
    channels."""
    rows, orders = [], 0
    for order_id, order_lines in sorted(_wms_orders(root).items(), key=lambda kv: int(kv[0])):
        tracking = f"4912{int(order_id):08d}" if orders % 2 == 0 else ""
        orders += 1
        expected.shipped[order_id] = tracking or None
        for line in order_lines:
            rows.append(
                f"S-NE-{order_id},{line['warehouse']},{order_id},{tracking},"
                f"2026-11-27 15:00:00,{line['product_code']},{line['quantity']}"
            )
    link = dict(products)
    for i, (warehouse, linked) in enumerate(
        (("ITAKU", True), ("SHINJUKU", False), ("ASAKUSA", False))
    ):
        product = products[i + 1][0]
        rows.append(f"S-SHOP-{i},{warehouse},,,2026-11-27 16:00:00,{product},2")
        if linked:
            code = link[product].casefold()
            expected.stock[warehouse][code] = expected.stock[warehouse].get(code, 0) - 2
    _write(root / "wms" / "inbox" / "shipments-demo.csv", SHIP_HEADER, rows)
    return orders


def _play_receipts(root: Path, products: list[tuple[str, str]], expected: Expected) -> None:
    rows = []
    link = dict(products)
    for i, (warehouse, linked) in enumerate(
        (("ITAKU", True), ("SHINJUKU", False), ("ASAKUSA", False))
    ):
        for j in range(2):
            product = products[(i * 2 + j + 5) % len(products)][0]
            rows.append(f"R-{i}-{j},{warehouse},2026-11-27 17:00:00,{product},{10 + j}")
            if linked:
                code = link[product].casefold()
                expected.stock[warehouse][code] = expected.stock[warehouse].get(code, 0) + 10 + j
    _write(root / "wms" / "inbox" / "receipts-demo.csv", RECEIPT_HEADER, rows)


def _until_quiet(config_path: Path) -> list[RunOnceReport]:
    """Run passes until a pass finds nothing new and nothing is pending."""
    reports = []
    for _ in range(MAX_PASSES):
        runtime = build_runtime(config_path)
        try:
            report = run_once(runtime)
            with read_session(runtime.engine) as session:
                pending = session.scalars(
                    select(OutboxItem.id).where(
                        col(OutboxItem.state).in_(
                            [OutboxState.PENDING.value, OutboxState.IN_FLIGHT.value]
                        )
                    )
                ).first()
        finally:
            runtime.close()
        reports.append(report)
        moved = (
            report.intake is not None and (report.intake.events or report.intake.accepted)
        ) or any(r.items_out for r in report.stages)
        if pending is None and not moved:
            break
        time.sleep(0.3)
    return reports


#: The WMS side built into this module; any other name is a connector plugin's demo.
CSV_DEMO = "csv"


def demo(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Folder to run the demo in and keep its files (default: a new "
            "temporary folder, removed when the check passed).",
        ),
    ] = None,
    wms: Annotated[
        str,
        typer.Option(
            "--wms",
            help="The WMS side: csv (CSV folders), or "
            "the demo of a WMS connector plugin, e.g. logikura (its "
            "sandbox over its API).",
        ),
    ] = CSV_DEMO,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Run in a --dir that is not empty (the demo's daemon.yaml, state/ "
            "and wms/ there are overwritten).",
        ),
    ] = False,
) -> None:
    """Run nebridge end to end against the Next Engine sandbox and check the result."""
    from daemon.cli.common import get

    get(ctx)  # refuses --company: the demo builds an installation of its own
    if workdir is not None:
        _check_workdir(workdir, force)
    plugin_demo = None if wms == CSV_DEMO else _plugin_demo(wms)
    root = workdir or Path(tempfile.mkdtemp(prefix="nebridge-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    info(f"demo folder: {root}")
    try:
        _run_wms_demo(root, plugin_demo)
    except typer.Exit as done:
        if done.exit_code:
            info(
                f"the demo's files are kept in {root} (daemon.yaml, state/, wms/) to look "
                f"into; remove them with `rm -r {root}`"
            )
        raise
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
        info(f"removed the demo folder {root} (keep the files with --dir PATH)")
    else:
        info(
            f"the demo's files are in {root} (daemon.yaml, state/, wms/); remove them with "
            f"`rm -r {root}`"
        )


def _check_workdir(workdir: Path, force: bool) -> None:
    """Refuse a --dir that is a file, or holds anything (an installation?) unless --force."""
    if workdir.exists() and not workdir.is_dir():
        fail(f"--dir {workdir} is a file; give a new or empty folder", code=2)
    entries = sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else []
    if entries and not force:
        shown = ", ".join(entries[:5]) + (" …" if len(entries) > 5 else "")
        what = "holds a nebridge installation" if "daemon.yaml" in entries else "is not empty"
        fail(
            f"--dir {workdir} {what} ({shown}); the demo writes daemon.yaml, state/ and wms/ "
            "there: give a new or empty folder, or pass --force to run there anyway",
            code=2,
        )


def _plugin_demo(name: str) -> Callable[[DemoContext], None]:
    """The demo the connector plugin ``wms_<name>`` offers, or exit 2 naming the choices."""
    from daemon.surface import demo_of, installed_connectors

    spec = demo_of(name)
    if spec is None:
        fail(
            f"no demo for --wms {name!r}: neither built in nor offered by an installed WMS "
            f"connector plugin wms_{name}; installed connectors: "
            f"{', '.join(installed_connectors()) or 'none'} (csv is built in)",
            code=2,
        )
    return spec.run


def _run_wms_demo(root: Path, plugin_demo: Callable[[DemoContext], None] | None) -> None:
    """The demo in ``root``: the CSV one, or a plugin's, against a fresh Next Engine
    sandbox."""
    raw = read_yaml(EXAMPLE_CONFIG)
    sandbox = SandboxServer(
        SandboxConfig(
            client_id=str(raw["nextengine"]["client_id"]),
            client_secret=str(raw["nextengine"]["client_secret"]),
            seed=7,
            seed_size=60,
            que_processing_delay_s=0.5,
        )
    )
    sandbox.start()
    try:
        if plugin_demo is None:
            with notify_receiver() as staff:
                _run_demo(root, sandbox, staff)
            return
        try:
            plugin_demo(demo_context(root, sandbox))
        except SurfaceError as exc:
            fail(str(exc))
    finally:
        sandbox.stop()


def demo_context(root: Path, sandbox: SandboxServer) -> DemoContext:
    """What a plugin's demo gets: the steps of this demo, bound to ``root`` and ``sandbox``."""
    config_path = root / "daemon.yaml"

    def install(configure_wms: Callable[[Any], None]) -> Path:
        start_linked(prepare_config(root, sandbox, configure_wms), sandbox)
        return config_path

    def run_until_quiet() -> list[DemoStage]:
        return [
            DemoStage(
                warehouse=stage.warehouse,
                stage=str(stage.stage),
                counts=dict(stage.counts),
                subjects={k: list(v) for k, v in stage.subjects.items()},
            )
            for report in _until_quiet(config_path)
            for stage in report.stages
        ]

    def failed(message: str) -> NoReturn:
        fail(message)

    return DemoContext(
        root=root,
        next_engine=sandbox,
        install=install,
        plant_unlinked_order=lambda: plant_unlinked_order(sandbox),
        run_until_quiet=run_until_quiet,
        connect_wms=lambda approve: _connect_wms(config_path, approve),
        outbox=lambda: _stored_outbox(config_path),
        orders=lambda: _stored_orders(config_path),
        free_port=free_port,
        info=info,
        table=print_table,
        fail=failed,
    )


def _connect_wms(config_path: Path, approve: Callable[[str], None]) -> str:
    """``nebridge wms connect`` with ``approve(url)`` playing the person at the WMS's
    permission page; returns what the connector says of the new link."""
    runtime = build_runtime(config_path)
    try:
        connector: object = runtime.connector
        if not isinstance(connector, AuthorizingConnector):
            fail("the demo's WMS connector has no sign-in; its demo must not call connect_wms")
        ctx = runtime.connector_context()
        state = "demo-state"
        url = connector.authorization_url(state, ctx)
        received: dict[str, str] = {}
        redirect_uri = connector.redirect_uri

        def receive() -> None:
            received["code"] = wait_for_code(redirect_uri, state, 30)

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        for _ in range(50):
            try:
                approve(url)
                break
            except OSError:  # the receiver is not listening yet
                time.sleep(0.1)
        receiver.join(30)
        if "code" not in received:
            fail("the WMS's permission page did not reach nebridge's redirect receiver")
        return times_in_zone(
            connector.authorize(received["code"], ctx).detail, display_zone(runtime.loaded)
        )
    finally:
        runtime.close()


def _stored_outbox(config_path: Path) -> list[DemoOutboxItem]:
    runtime = build_runtime(config_path)
    try:
        with read_session(runtime.engine) as session:
            return [
                DemoOutboxItem(
                    kind=str(i.kind), state=str(i.state), warehouse=i.warehouse, subject=i.subject
                )
                for i in session.scalars(select(OutboxItem))
            ]
    finally:
        runtime.close()


def _stored_orders(config_path: Path) -> list[DemoOrder]:
    runtime = build_runtime(config_path)
    try:
        with read_session(runtime.engine) as session:
            return [
                DemoOrder(
                    ne_order_id=o.ne_order_id,
                    state=str(o.state),
                    warehouse=o.warehouse,
                    hold_reason=o.hold_reason,
                )
                for o in session.scalars(select(ImportedOrder))
            ]
    finally:
        runtime.close()


def _run_demo(root: Path, sandbox: SandboxServer, staff: StaffInbox) -> None:
    info(f"… Next Engine sandbox on {sandbox.base_url}")
    info(f"… notifications go to a local receiver on {staff.url} (plugin notify_webhook)")

    def configure(raw: Any) -> None:
        _csv_folders(root)(raw)
        raw["plugins"]["notify_webhook"] = {"enabled": True, "format": "json", "url": staff.url}

    config_path = prepare_config(root, sandbox, configure)
    loaded = start_linked(config_path, sandbox)
    plant_unlinked_order(sandbox)
    unlinked = UNLINKED_GOODS.casefold()
    products = [(p, link) for p, link in _products(sandbox) if link.casefold() != unlinked]
    on_hand = _on_hand(sandbox, products)
    _write(
        root / "wms" / "inbox" / "products.csv",
        "product_code,link_code",
        [f"{p},{link}" for p, link in products],
    )
    time.sleep(0.3)
    info("… importing orders")
    import_reports = _until_quiet(config_path)
    change_reports, cancel, edit = _play_changes(root, sandbox, config_path)
    expected = Expected()
    shipped = _play_shipments(root, products, expected)
    _play_receipts(root, products, expected)
    info(
        f"… the WMS confirms {shipped} shipment(s) of imported orders, 3 shop shipments and "
        "6 receipts"
    )
    time.sleep(0.3)
    reports = _until_quiet(config_path)
    _summarise(
        loaded.config,
        config_path,
        sandbox,
        expected,
        import_reports + change_reports + reports,
        staff,
    )
    problems = _check_changes(root, sandbox, cancel, edit)
    if problems:
        fail("demo check failed:\n  " + "\n  ".join(problems))
    _play_stock(root, config_path, sandbox, on_hand)


def _summarise(
    config: DaemonConfig,
    config_path: Path,
    sandbox: SandboxServer,
    expected: Expected,
    reports: list[RunOnceReport],
    staff: StaffInbox,
) -> None:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    skipped: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        for stage in report.stages:
            counts[stage.warehouse]["imported"] += stage.counts.get("imported", 0)
            counts[stage.warehouse]["matched_ignoring_case"] += stage.counts.get(
                "matched_ignoring_case", 0
            )
            skipped[stage.warehouse].update(stage.subjects.get("skipped", []))
    runtime = build_runtime(config_path)
    with read_session(runtime.engine) as session:
        items = list(session.scalars(select(OutboxItem)))
        held = list(
            session.scalars(select(ImportedOrder).where(col(ImportedOrder.state) == "held"))
        )
    runtime.close()
    problems: list[str] = []
    ledger_shipped = sandbox.ledger.shipped_order_ids()
    if len(ledger_shipped) != len(set(ledger_shipped)):
        problems.append("an order was shipped twice in Next Engine")
    rows = []
    for wh in config.warehouses:
        mine = [i for i in items if i.warehouse == wh.code]
        ships = [i for i in mine if i.kind == SHIP_ORDER.name and i.state == "done"]
        tracking = 0
        for item in ships:
            order = sandbox.state.order_snapshot(int(item.subject))
            want = expected.shipped.get(item.subject)
            if order["receive_order_order_status_id"] != "50":
                problems.append(f"order {item.subject} is not shipped in the sandbox")
            if (order["receive_order_delivery_cut_form_id"] or None) != want:
                problems.append(
                    f"order {item.subject}: tracking number in Next Engine is "
                    f"{order['receive_order_delivery_cut_form_id']!r}, not {want!r}"
                )
            tracking += bool(want)
        deltas = sum(
            int(json.loads(i.payload)["delta"])
            for i in mine
            if i.kind == ADJUST_STOCK.name and i.state == "done"
        )
        want_stock = expected.stock.get(wh.code, {})
        for code, delta in want_stock.items():
            got = sum(
                e.delta or 0 for e in sandbox.ledger.entries(kind="stock.upload", goods_code=code)
            )
            if got != delta:
                problems.append(
                    f"{wh.code}: Next Engine stock of {code} moved {got:+d}, expected {delta:+d}"
                )
        if not wh.ne_linked and any(i.kind == ADJUST_STOCK.name for i in mine):
            problems.append(f"{wh.code} is not linked but changed Next Engine stock")
        c = counts.get(wh.code, {})
        rows.append(
            [
                wh.code,
                wh.name,
                "yes" if wh.ne_linked else "no",
                c.get("imported", 0),
                len(skipped.get(wh.code, ())),
                c.get("matched_ignoring_case", 0),
                len(ships),
                tracking,
                f"{deltas:+d}",
                sum(1 for h in held if h.warehouse == wh.code),
            ]
        )
    expected_ships = set(expected.shipped)
    if {
        i.subject for i in items if i.kind == SHIP_ORDER.name and i.state == "done"
    } != expected_ships:
        problems.append("the shipped orders differ from the shipments the WMS confirmed")
    print_table(
        "demo summary",
        [
            "warehouse",
            "name",
            "ne_linked",
            "imported",
            "skipped by tag",
            "matched ignoring case",
            "shipped",
            "tracking written",
            "stock delta",
            "held",
        ],
        rows,
    )
    for order in held:
        info(f"held: order {order.ne_order_id}: {order.hold_reason}")
    told = {str(m.get("key")) for m in staff.messages}
    for message in staff.messages:
        info(f"notified (what staff receive): {message.get('subject')}")
    problems.extend(
        f"no notification told staff that order {o.ne_order_id} is held"
        for o in held
        if f"held_order:{o.ne_order_id}" not in told
    )
    if problems:
        fail("demo check failed:\n  " + "\n  ".join(problems))
    info(
        f"demo check passed against the sandbox: {len(expected_ships)} order(s) shipped once "
        "each with the right tracking numbers, stock changes exact to the unit"
    )


# -- stock drift: the WMS counts, nebridge compares, a manual edit is found and corrected ------

#: Where the demo's WMS counts stock (the one warehouse linked to Next Engine).
STOCK_WAREHOUSE = "ITAKU"


def _on_hand(sandbox: SandboxServer, products: list[tuple[str, str]]) -> dict[str, int]:
    """The warehouse's stock before the demo: in step with Next Engine's, product by product."""
    out: dict[str, int] = {}
    for product, link in products:
        goods = sandbox.state.find_goods(link)
        out[product] = goods.quantity if goods is not None else 0
    return out


def _counted(root: Path, on_hand: dict[str, int]) -> dict[str, int]:
    """The warehouse's count after the demo's shipments and receipts there, computed from the
    files its WMS wrote (not from nebridge)."""
    counts = dict(on_hand)
    processed = root / "wms" / "inbox" / "processed"
    for pattern, sign in (("shipments-demo*.csv", -1), ("receipts-demo*.csv", 1)):
        for path in processed.glob(pattern):
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    if row["warehouse"] == STOCK_WAREHOUSE:
                        counts[row["product_code"]] += sign * int(row["quantity"])
    return counts


def _play_stock(
    root: Path, config_path: Path, sandbox: SandboxServer, on_hand: dict[str, int]
) -> None:
    """The WMS counts its stock: nebridge finds no unexplained drift. A person then edits a
    goods' stock in Next Engine by hand: ``stock diff`` finds it, ``stock reconcile`` puts
    it right, once."""
    counts = _counted(root, on_hand)
    _write(
        root / "wms" / "inbox" / "stock-demo.csv",
        "warehouse,product_code,quantity,counted_at",
        [f"{STOCK_WAREHOUSE},{p},{q},2026-11-27 18:00:00" for p, q in sorted(counts.items())],
    )
    info(
        f"… the WMS counts its stock at {STOCK_WAREHOUSE} ({len(counts)} products): "
        "`nebridge stock diff`"
    )
    time.sleep(0.3)
    _until_quiet(config_path)
    problems: list[str] = []
    if _show_stock(config_path):
        problems.append("stock diff found unexplained drift after the demo's own sync")
    links = _links(config_path)
    product, link = next((p, links[p]) for p in sorted(counts) if counts[p] and p in links)
    goods = sandbox.state.find_goods(link)
    assert goods is not None
    edited = goods.quantity + 7
    requests.post(
        f"{sandbox.base_url}/_sandbox/human_edit/stock",
        json={"goods_id": goods.code, "quantity": edited},
        timeout=10,
    ).raise_for_status()
    info(
        f"… a person sets the stock of {goods.code} to {edited} in Next Engine by hand: "
        "`nebridge stock diff`"
    )
    if _show_stock(config_path) != 1:
        problems.append(f"stock diff did not find the manual edit of {goods.code}")
    runtime = build_runtime(config_path)
    try:
        diff = diff_now(runtime)
        done = reconcile(runtime.db, diff, link_key=link_key_of(runtime))
    finally:
        runtime.close()
    info(
        "… `nebridge stock reconcile --apply`: "
        + "; ".join(f"{c.goods} {c.delta:+d} ({c.state})" for c in done)
    )
    _until_quiet(config_path)
    if _show_stock(config_path) or goods.quantity != edited - 7:
        problems.append(
            f"the correction of {goods.code} did not bring Next Engine back to "
            f"the count ({goods.quantity}, counted {edited - 7})"
        )
    if problems:
        fail("demo check failed:\n  " + "\n  ".join(problems))
    info(
        f"demo stock check passed: zero unexplained drift over {len(counts)} products; the "
        f"manual edit of {goods.code} ({product}) was found and corrected once"
    )


def _links(config_path: Path) -> dict[str, str]:
    """The product master nebridge holds (product code → link code)."""
    runtime = build_runtime(config_path)
    try:
        with read_session(runtime.engine) as session:
            return {
                p.product_code: p.link_code or ""
                for p in session.scalars(select(WmsProduct))
                if p.link_code
            }
    finally:
        runtime.close()


def _show_stock(config_path: Path) -> int:
    """Compare and print as `nebridge stock diff` does; return the unexplained drifts."""
    runtime = build_runtime(config_path)
    try:
        return show_diff(diff_now(runtime), zone=display_zone(runtime.loaded))
    finally:
        runtime.close()
