"""A deliberately tiny NE caller for tests and plugin authors who poke the sandbox by hand.

It is not nebridge's client (``daemon.nextengine.client`` is): it only posts form data, keeps
the newest token pair from every answer (as NE requires) and returns the decoded JSON.
"""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from daemon.sandbox.server import SandboxServer


class SandboxCaller:
    """Posts to a sandbox with the current token pair and stores rotated pairs."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.session = requests.Session()
        self.access_token: str | None = None
        self.refresh_token: str | None = None

    @classmethod
    def signed_in(cls, server: SandboxServer) -> SandboxCaller:
        """A caller that went through sign-in (``auto=1``) and ``api_neauth``."""
        caller = cls(server.base_url)
        caller.sign_in(server.config.client_id, server.config.client_secret)
        return caller

    def sign_in(self, client_id: str, client_secret: str) -> dict[str, Any]:
        """Run the uid/state flow non-interactively and keep the issued pair."""
        answer = self.session.get(
            f"{self.base_url}/users/sign_in/",
            params={
                "client_id": client_id,
                "redirect_uri": "http://127.0.0.1/callback",
                "auto": "1",
            },
            allow_redirects=False,
            timeout=self.timeout,
        )
        answer.raise_for_status()
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        return self.call(
            "/api_neauth",
            uid=query["uid"][0],
            state=query["state"][0],
            client_id=client_id,
            client_secret=client_secret,
        )

    def call(self, path: str, **params: Any) -> dict[str, Any]:
        """POST ``params`` (plus the current pair, if any) to ``path``; return the JSON answer."""
        data: dict[str, Any] = {}
        if self.access_token is not None:
            data["access_token"] = self.access_token
            data["refresh_token"] = self.refresh_token
        data.update({k: v for k, v in params.items() if v is not None})
        answer = self.session.post(f"{self.base_url}{path}", data=data, timeout=self.timeout)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        if body.get("access_token"):
            self.access_token = body["access_token"]
            self.refresh_token = body["refresh_token"]
        return body

    def search(self, path: str, fields: str, **conditions: Any) -> list[dict[str, Any]]:
        """Call a ``search`` path and return ``data`` (raises if the call failed)."""
        body = self.call(path, fields=fields, **conditions)
        if body["result"] != "success":
            raise AssertionError(f"{path} failed: {body.get('code')} {body.get('message')}")
        data: list[dict[str, Any]] = body["data"]
        return data

    def upload_goods(
        self, csv_text: str, *, encoding: str = "utf-8", gz: bool = False
    ) -> dict[str, Any]:
        """Upload a goods CSV (``data_type=csv`` or raw-gzip ``gz``)."""
        raw = csv_text.encode(encoding)
        if gz:
            return self.call("/api_v1_master_goods/upload", data_type="gz", data=gzip.compress(raw))
        return self.call("/api_v1_master_goods/upload", data_type="csv", data=raw)

    def control(self, method: str, path: str, json: Any = None) -> Any:
        """Call the ``/_sandbox`` control API and return its JSON."""
        answer = self.session.request(
            method, f"{self.base_url}/_sandbox{path}", json=json, timeout=self.timeout
        )
        return answer.json()

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()
