"""NE sandbox: sign-in pages, api_neauth, token lifetimes and rotation (reference §1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from daemon.sandbox import JST, SandboxConfig, SandboxServer
from daemon.sandbox.testing import SandboxCaller

START = datetime(2025, 3, 1, 10, 0, 0, tzinfo=JST)


@pytest.fixture
def ne() -> Iterator[SandboxServer]:
    config = SandboxConfig(seed=5, seed_size=20, clock_start=START, clock_frozen=True)
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def caller(ne: SandboxServer) -> Iterator[SandboxCaller]:
    c = SandboxCaller.signed_in(ne)
    yield c
    c.close()


def _post(ne: SandboxServer, path: str, **data: str) -> dict[str, object]:
    answer = requests.post(f"{ne.base_url}{path}", data=data, timeout=5)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def _login(ne: SandboxServer) -> tuple[str, str]:
    answer = requests.get(
        f"{ne.base_url}/users/sign_in/",
        params={
            "client_id": ne.config.client_id,
            "redirect_uri": "http://app.test/cb?x=1",
            "auto": "1",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert (location.netloc, location.path) == ("app.test", "/cb")
    query = parse_qs(location.query)
    assert query["x"] == ["1"]
    return query["uid"][0], query["state"][0]


def _neauth(ne: SandboxServer, uid: str, state: str, **override: str) -> dict[str, object]:
    data = {
        "uid": uid,
        "state": state,
        "client_id": ne.config.client_id,
        "client_secret": ne.config.client_secret,
    }
    data.update(override)
    return _post(ne, "/api_neauth", **data)


# ---------------------------------------------------------------- sign-in pages
def test_sign_in_page_shows_button_and_form_post_redirects(ne: SandboxServer) -> None:
    for path in ("/users/sign_in/", "/users/sign_in"):
        page = requests.get(
            f"{ne.base_url}{path}",
            params={"client_id": ne.config.client_id, "redirect_uri": "http://app.test/cb"},
            timeout=5,
        )
        assert page.status_code == 200
        assert "<form" in page.text and "<button" in page.text
    posted = requests.post(
        f"{ne.base_url}/users/sign_in/",
        data={"client_id": ne.config.client_id, "redirect_uri": "http://app.test/cb"},
        allow_redirects=False,
        timeout=5,
    )
    assert posted.status_code == 302
    query = parse_qs(urlsplit(posted.headers["Location"]).query)
    assert len(query["uid"][0]) == 128
    assert query["state"][0]


def test_sign_in_with_unknown_client_id_is_an_error_page(ne: SandboxServer) -> None:
    page = requests.get(
        f"{ne.base_url}/users/sign_in/",
        params={"client_id": "nope", "redirect_uri": "http://app.test/cb", "auto": "1"},
        allow_redirects=False,
        timeout=5,
    )
    assert page.status_code == 400
    assert "client_id" in page.text
    assert "Location" not in page.headers


def test_neauth_returns_flat_token_and_user_fields(ne: SandboxServer) -> None:
    uid, state = _login(ne)
    body = _neauth(ne, uid, state)
    assert body["result"] == "success"
    assert "data" not in body
    assert body["uid"] == uid
    for key in (
        "access_token",
        "refresh_token",
        "company_ne_id",
        "company_name",
        "company_app_header",
        "pic_ne_id",
        "pic_name",
        "pic_mail_address",
    ):
        assert isinstance(body[key], str) and body[key]
    assert body["access_token_end_date"] == "2025-03-02 10:00:00"
    assert body["refresh_token_end_date"] == "2025-03-04 10:00:00"


def test_neauth_with_trailing_slash_and_python_login(ne: SandboxServer) -> None:
    uid, state = ne.state.issue_login()
    body = _post(
        ne,
        "/api_neauth/",
        uid=uid,
        state=state,
        client_id=ne.config.client_id,
        client_secret=ne.config.client_secret,
    )
    assert body["result"] == "success"


def test_neauth_errors(ne: SandboxServer) -> None:
    uid, state = _login(ne)
    missing_uid = _neauth(ne, "", state)
    assert (missing_uid["result"], missing_uid["code"]) == ("error", "001001")
    assert "access_token" not in missing_uid
    bad_secret = _neauth(ne, uid, state, client_secret="wrong")
    assert bad_secret["result"] == "error" and bad_secret["code"] == "001003"
    assert _neauth(ne, uid, state)["result"] == "success"
    reused = _neauth(ne, uid, state)
    assert reused["result"] == "redirect"


def test_state_expires_after_five_minutes(ne: SandboxServer) -> None:
    uid, state = _login(ne)
    ne.clock.advance(301)
    body = _neauth(ne, uid, state)
    assert body["result"] == "redirect"
    assert "access_token" not in body


# ---------------------------------------------------------------- token use
def test_every_answer_echoes_tokens_and_strings(caller: SandboxCaller) -> None:
    body = caller.call("/api_v1_login_company/info")
    assert body["result"] == "success"
    assert body["count"] == "1"
    data = body["data"]
    assert isinstance(data, list)
    assert data[0]["company_host"] == caller.base_url
    assert all(isinstance(v, str) for v in data[0].values())
    assert body["access_token"] == caller.access_token
    user = caller.call("/api_v1_login_user/info")
    assert user["data"][0]["pic_name"]


def test_missing_and_unknown_access_token(ne: SandboxServer) -> None:
    missing = _post(ne, "/api_v1_login_user/info")
    assert (missing["result"], missing["code"]) == ("error", "002001")
    unknown = _post(ne, "/api_v1_login_user/info", access_token="deadbeef")
    assert (unknown["result"], unknown["code"]) == ("error", "002002")
    assert "access_token" not in unknown


def test_expired_access_token_rotates_once_and_old_pair_dies(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    old_access, old_refresh = caller.access_token, caller.refresh_token
    assert old_access and old_refresh
    ne.clock.advance(86_400 + 1)
    first = caller.call("/api_v1_login_company/info")
    assert first["result"] == "success"
    assert first["access_token"] != old_access
    assert first["refresh_token"] != old_refresh
    assert first["access_token_end_date"] == "2025-03-03 10:00:01"
    assert first["refresh_token_end_date"] == "2025-03-05 10:00:01"
    # a parallel request that still carried the old pair: 002002, no tokens
    second = _post(
        ne, "/api_v1_login_company/info", access_token=old_access, refresh_token=old_refresh
    )
    assert (second["result"], second["code"]) == ("error", "002002")
    assert "access_token" not in second
    # the new pair keeps working and does not rotate again
    third = caller.call("/api_v1_login_company/info")
    assert third["result"] == "success" and third["access_token"] == first["access_token"]
    verdicts = [u.verdict for u in ne.state.traffic.token_uses()]
    assert verdicts == ["rotated", "dead", "current"]
    assert len(ne.state.traffic.dead_pair_uses()) == 1
    assert [e.kind for e in ne.ledger.entries(kind="token.*")] == ["token.issue", "token.rotate"]


def test_expired_access_without_refresh_token_needs_relogin(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    ne.clock.advance(86_401)
    body = _post(ne, "/api_v1_login_user/info", access_token=caller.access_token or "")
    assert body["result"] == "redirect"
    assert "access_token" not in body


def test_expired_refresh_token_redirects_with_002004(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    ne.clock.advance(3 * 86_400 + 1)
    body = caller.call("/api_v1_login_user/info")
    assert (body["result"], body["code"]) == ("redirect", "002004")
    assert "access_token" not in body


def test_valid_access_token_never_rotates_early(ne: SandboxServer, caller: SandboxCaller) -> None:
    before = caller.access_token
    ne.clock.advance(86_399)
    assert caller.call("/api_v1_login_user/info")["access_token"] == before


def test_new_login_revokes_previous_pair(ne: SandboxServer, caller: SandboxCaller) -> None:
    other = SandboxCaller.signed_in(ne)
    try:
        body = caller.call("/api_v1_login_user/info")
        assert body["code"] == "002002"
        assert other.call("/api_v1_login_user/info")["result"] == "success"
    finally:
        other.close()


def test_previous_pair_survives_when_revocation_is_off() -> None:
    config = SandboxConfig(seed_size=5, neauth_revokes_previous_pair=False)
    with SandboxServer(config) as ne:
        first = SandboxCaller.signed_in(ne)
        second = SandboxCaller.signed_in(ne)
        try:
            assert first.call("/api_v1_login_user/info")["result"] == "success"
            assert second.call("/api_v1_login_user/info")["result"] == "success"
        finally:
            first.close()
            second.close()


def test_expire_access_token_every_n_calls(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.faults.update(expire_access_token_every_n_calls=3)
    seen = []
    for _ in range(6):
        before = caller.access_token
        body = caller.call("/api_v1_login_user/info")
        assert body["result"] == "success"
        seen.append(body["access_token"] != before)
    assert seen == [False, False, True, False, False, True]


def test_app_company_uses_client_credentials(ne: SandboxServer) -> None:
    ok = _post(
        ne, "/api_app/company", client_id=ne.config.client_id, client_secret=ne.config.client_secret
    )
    assert ok["result"] == "success" and ok["count"] == "1"
    assert "access_token" not in ok
    bad = _post(ne, "/api_app/company", client_id=ne.config.client_id, client_secret="x")
    assert bad["result"] == "error"


def test_unknown_path_is_000001_and_still_echoes_tokens(caller: SandboxCaller) -> None:
    body = caller.call("/api_v1_no_such/thing")
    assert (body["result"], body["code"]) == ("error", "000001")
    assert body["access_token"] == caller.access_token
    anonymous = requests.post(f"{caller.base_url}/api_v1_no_such/thing", timeout=5).json()
    assert anonymous["code"] == "000001" and "access_token" not in anonymous


def test_control_api_login_and_tokens(ne: SandboxServer) -> None:
    control = SandboxCaller(ne.base_url)
    try:
        login = control.control("POST", "/login")
        body = _neauth(ne, login["uid"], login["state"])
        assert body["result"] == "success"
        assert control.control("GET", "/tokens")["access_token"] == body["access_token"]
        issued = control.control("POST", "/tokens")
        expired = control.control("POST", "/tokens/expire")
        assert expired["access_token"] == issued["access_token"]
        assert expired["access_token_end_date"] < ne.state.now()
    finally:
        control.close()


def test_stop_leaves_no_threads_even_with_open_keepalive_connections() -> None:
    before = set(threading.enumerate())
    server = SandboxServer(SandboxConfig(seed_size=5)).start()
    session = requests.Session()
    session.get(f"{server.base_url}/_sandbox/clock", timeout=5)
    slow = SandboxServer(SandboxConfig(seed_size=5))
    assert slow.state.now()  # built but never started: stop() is a no-op
    slow.stop()
    server.stop()
    server.stop()
    session.close()
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []


def test_clock_advance_via_control_api(ne: SandboxServer) -> None:
    control = SandboxCaller(ne.base_url)
    try:
        before = datetime.strptime(control.control("GET", "/clock")["now"], "%Y-%m-%d %H:%M:%S")
        after = control.control("POST", "/clock", {"advance_seconds": 3600})["now"]
        moved = datetime.strptime(after, "%Y-%m-%d %H:%M:%S") - before
        assert timedelta(seconds=3599) <= moved <= timedelta(seconds=3610)
        jumped = control.control("POST", "/clock", {"set": "2030-01-01 00:00:00"})["now"]
        assert jumped.startswith("2030-01-01 00:00")
    finally:
        control.close()
