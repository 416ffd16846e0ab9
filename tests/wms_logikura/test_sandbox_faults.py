"""The Logikura sandbox's faults for issue #20 findings 7 and 9, set through its control API
over HTTP (as another process would): a POST applied late, a looping ``Link``, any
``X-Rate-Limit-Reset``."""

from __future__ import annotations

import requests

from plugins.wms_logikura.sandbox import SandboxServer


def control(lk: SandboxServer, verb: str, body: dict[str, object]) -> dict[str, object]:
    answer = requests.post(f"{lk.base_url}/_sandbox/faults/{verb}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert isinstance(data, dict)
    return data


def test_faults_are_scheduled_through_the_control_api(lk: SandboxServer) -> None:
    control(
        lk,
        "apply_late_next",
        {"seconds": 5, "path": "/api/v1/shipping_schedules", "method": "post"},
    )
    control(lk, "loop_links_next", {"count": 3, "path": "/api/v1/product_variants"})
    snapshot = control(lk, "reset_header_next", {"value": "1800000000"})
    scheduled = snapshot["scheduled"]
    assert isinstance(scheduled, list)
    assert [(s["kind"], s["remaining"], s["method"]) for s in scheduled] == [
        ("apply_late", 1, "POST"),
        ("link_loop", 3, None),
        ("reset_header", 1, None),
    ]
    assert scheduled[2]["value"] == "1800000000"
    refused = requests.post(
        f"{lk.base_url}/_sandbox/faults/apply_late_next", json={"seconds": 0}, timeout=10
    )
    assert refused.status_code == 400 and "seconds" in refused.text


def test_a_loop_and_a_reset_header_reach_the_client(lk: SandboxServer) -> None:
    token = lk.state.issue_tokens(None, source="test")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    control(lk, "loop_links_next", {"path": "/api/v1/product_variants"})
    control(lk, "reset_header_next", {"value": "1800000000", "path": "/api/v1/product_variants"})
    url = f"{lk.base_url}/api/v1/product_variants?page=2"
    answer = requests.get(url, headers=headers, timeout=10)
    assert answer.links["next"]["url"] == url  # the same page again
    assert answer.headers["X-Rate-Limit-Reset"] == "1800000000"
    again = requests.get(url, headers=headers, timeout=10)
    assert again.headers["X-Rate-Limit-Reset"] != "1800000000"
