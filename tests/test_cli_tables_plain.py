"""A table cell is text, never Rich markup: a rejected WMS file's reason naming its column in
brackets (``[tracking_number]``) reaches the admin as written in `doctor`'s table, and a file
name carrying markup does not restyle the output (admin review F13)."""

from __future__ import annotations

from typer.testing import CliRunner

from daemon.cli import app
from daemon.testing.installation import Installation


def test_doctor_shows_a_bracketed_column_name_as_written(
    nebridge_installation: Installation,
) -> None:
    nebridge_installation.drop(
        "shipments-[red]nocols.csv",
        "shipment_id,warehouse,ne_order_id,confirmed_at,product_code,quantity",
        ["S-1,ITAKU,1,2026-11-27T10:00:00+09:00,A-1,1"],
    )
    nebridge_installation.run_once()
    result = CliRunner().invoke(app, ["--config", str(nebridge_installation.config), "doctor"])
    assert "[tracking_number]" in result.output, result.output
    assert "shipments-[red]nocols.csv" in result.output
