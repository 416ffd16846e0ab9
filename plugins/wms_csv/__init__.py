"""Built-in WMS connector ``csv``: exchange CSV files with a WMS through two folders.

Configured by ``wms.csv`` (:class:`CsvConnectorConfig`): ``inbox``, ``outbox``, ``timezone``
(default ``Asia/Tokyo``), ``stable_seconds`` (0.5), ``processed_watch_seconds`` (600: a file
filed away that grows is read again) and ``encoding_out`` (``utf-8``/``cp932``).

Inbound files (the WMS writes them into ``inbox``; names match in any case):

* ``shipments*.csv``: ``shipment_id, warehouse, ne_order_id, tracking_number, confirmed_at,
  product_code, quantity``, one row per shipment line; empty ``ne_order_id`` = not from
  Next Engine, else a Next Engine order number in canonical form (``16``, not ``0016``).
* ``receipts*.csv``: ``receipt_id, warehouse, confirmed_at, product_code, quantity``.
* ``products*.csv``: ``product_code, link_code`` (the Next Engine goods code, 紐付けコード;
  empty = not linked). The master is kept in place; see :mod:`plugins.wms_csv.connector`.

Rules shared by all inbound files:

* A header row is required; columns may come in any order, unknown columns are ignored, and
  every listed column must be present (values of ``ne_order_id``, ``tracking_number`` and
  ``link_code`` may be empty). Headers match ignoring case, surrounding spaces and
  full-width forms, and Japanese aliases are accepted (:mod:`plugins.wms_csv.formats`).
* Encoding: UTF-8 BOM, else UTF-8 if the whole file decodes, else CP932 (Shift_JIS); a file
  that fits none is rejected naming the first bad line. CRLF, LF or CR; a line longer than
  64 KiB is an error. Values are stripped of surrounding spaces; rows whose cells are all
  empty are skipped; a row with a different number of fields than the header is an error.
* Timestamps: ISO 8601 with an offset keeps its offset; ISO 8601 without offset,
  ``YYYY-MM-DD HH:MM[:SS]`` and ``YYYY/MM/DD HH:MM[:SS]`` are wall-clock times in
  ``timezone``. Events always carry aware datetimes.
* One shipment (receipt) id = one event. Its rows need not be adjacent but must agree on
  ``warehouse, ne_order_id, tracking_number, confirmed_at`` (receipts: ``warehouse,
  confirmed_at``; timestamps compare by instant). The quantities of the same product on
  several lines of one id add up (nebridge's own order file lists one line per Next Engine
  row, and may be echoed back).
* Quantities are positive integers in ASCII digits; warehouses must be configured; products
  must be known; tracking numbers have at most 50 characters, ids and codes 128.
* Files are read as they are: links and special files are rejected unread; a file that
  changes while it is read goes back to the inbox (see :mod:`plugins.wms_csv.folders`).
* A file with any error is rejected whole (moved to ``inbox/rejected/`` with
  ``<file>.errors.txt``), listing every error up to 1000 with line, column and reason.

Outbound: ``outbox/orders-<created_at as YYYYMMDDTHHMMSSZ>-<key slug>-<key hash>.csv``, one
row per order line, UTF-8 (or CP932) with header and CRLF, written atomically; with
``order_watch``, ``outbox/cancellations-<…>.csv`` (``ne_order_id, warehouse, reason,
detected_at``) before the order file of the same run; see :mod:`plugins.wms_csv.outbox`.

The folders (the inbox with ``.claimed/``, ``processed/``, ``rejected/``, and the outbox) are
created where missing when the engine starts the connector (``recover``), never when it is
built: read-only commands build it too. ``nebridge doctor`` checks that both folders exist and
are writable (:mod:`.health`).
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.connectors import ConnectorSpec
from hooks.records import HealthCheck, PluginInfo
from hooks.surface import ConnectorInUse
from plugins.wms_csv.config import CsvConnectorConfig
from plugins.wms_csv.connector import CsvBatch, CsvConnector
from plugins.wms_csv.health import folder_checks

__all__ = [
    "CsvBatch",
    "CsvConnector",
    "CsvConnectorConfig",
    "nebridge_health_checks",
    "nebridge_plugin_info",
    "nebridge_wms_connectors",
]

_SUMMARY = "Exchange CSV files with a WMS through an inbox and an outbox folder"


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin that provides the ``csv`` WMS connector."""
    return PluginInfo(
        name="wms_csv",
        summary=_SUMMARY,
        setting_ja="WMSとCSVファイル（受信フォルダ・送信フォルダ）で出荷・入荷実績と出荷指示を連携する",
    )


@hookimpl
def nebridge_wms_connectors() -> list[ConnectorSpec]:
    """Offer the ``csv`` connector, configured by ``wms.csv`` in ``daemon.yaml``."""
    return [
        ConnectorSpec(
            name="csv",
            factory=CsvConnector,
            config_model=CsvConnectorConfig,
            summary=_SUMMARY,
        )
    ]


@hookimpl
def nebridge_health_checks(connector: ConnectorInUse | None) -> list[HealthCheck]:
    """``doctor``: the inbox and outbox of ``wms.csv`` exist and are writable."""
    return folder_checks(connector)
