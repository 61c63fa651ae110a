"""The control API over HTTPS with mutual TLS, with fail-over across ``eventward serve`` replicas.

The client certificate is the identity: nothing in a request names the principal. A replica
that cannot be reached, times out or answers 5xx is skipped for the next one; when none
answers the call raises :class:`ControlPlaneUnavailable` and nothing is assumed. RFC 9457
problem details map back to eventward's typed errors by their ``code``.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence
from typing import Any

import requests

from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.policy.base import Resource
from eventward.errors import (
    AccessDenied,
    AuthenticationError,
    ConflictError,
    ControlPlaneUnavailable,
    InputError,
    NotFoundError,
    QuotaExceeded,
)

PREFIX = "/v1/control"
_ERRORS: dict[int, type[Exception]] = {400: InputError, 401: AuthenticationError, 403: AccessDenied,
                                       404: NotFoundError, 409: ConflictError, 413: InputError, 422: InputError,
                                       429: QuotaExceeded}


class HttpControlAPI:
    """ControlAPI over HTTPS. ``urls`` are tried in order, starting from the last that answered."""

    def __init__(self, urls: Sequence[str], *, principal: str, cert: str | None, key: str | None, ca: str,
                 timeout: float = 5.0, token: str | None = None) -> None:
        """``cert``/``key`` (mTLS) or ``token`` (a JWT sent as a bearer token, over TLS verified
        against ``ca``) authenticate; the principal is whatever the server maps them to."""
        if not urls:
            raise ValueError("at least one control-plane URL is needed")
        if (cert is None or key is None) and token is None:
            raise ValueError("a client certificate and key, or a token, is needed")
        self.principal = principal
        self._urls = [u.rstrip("/") for u in urls]
        self._good = 0
        self._timeout = timeout
        self._local = threading.local()
        self._cert = (cert, key) if cert is not None and key is not None else None
        self._ca, self._token = ca, token

    @classmethod
    def for_identity(cls, identity: ServiceIdentity, **kw: Any) -> HttpControlAPI:
        grant = identity.grant()
        urls = grant.get("control_urls") or []
        if not urls:
            raise ValueError("the grant names no control-plane URL")
        return cls(urls, principal=identity.principal, cert=str(identity.tls_cert_path),
                   key=str(identity.tls_key_path), ca=str(identity.ca_path), **kw)

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            # Only the deployment's CA and this service's certificate: no CA bundle, proxy or
            # .netrc credentials from the environment may take part in a key release.
            s.trust_env = False
            s.cert, s.verify = self._cert, self._ca
            if self._token is not None:
                s.headers["Authorization"] = f"Bearer {self._token}"
        return s

    def _request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                 timeout: float | None = None, prefix: str = PREFIX) -> Any:
        """One call, tried on each replica in turn (``prefix`` + ``path``; ``prefix=""`` reaches the
        gateway's other operations, e.g. ``/v1/subjects/forget`` for the operator CLI)."""
        n = len(self._urls)
        for i in range(n):
            at = (self._good + i) % n
            try:
                r = self._session().request(method, self._urls[at] + prefix + path, json=body, params=params,
                                            timeout=timeout or self._timeout)
            except requests.RequestException:
                continue
            if r.status_code >= 500:
                continue  # this replica cannot answer now (its KMS, store or itself): the next may
            self._good = at
            if r.status_code >= 400:
                _raise(r)
            return r.json()
        raise ControlPlaneUnavailable(f"no control-plane replica answered {method} {path} ({n} tried)")

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Any gateway operation (``path`` from ``/v1``) as this identity, with the same TLS and
        fail-over: the operator CLI's client mode. Raises as the ControlAPI methods do."""
        return self._request(method, path, body=body, params=params, prefix="")

    # --- ControlAPI ---------------------------------------------------------------------
    def encryption_keys(self, topic: str, event_type: str, wanted: Sequence[tuple[str | None, str, int]]
                        ) -> list[tuple[str, bytes, str | None]]:
        body = {"topic": topic, "type": event_type,
                "keys": [{"subject": s, "class": c, "nonces": n} for s, c, n in wanted]}
        got = self._request("POST", "/keys/encrypt", body=body)["keys"]
        return [(k["kid"], base64.b64decode(k["dek"]), k.get("subject_hash")) for k in got]

    def decryption_keys(self, topic: str, event_type: str, wanted: Sequence[tuple[str, str, str | None]]
                        ) -> dict[str, bytes | str]:
        body = {"topic": topic, "type": event_type,
                "keys": [{"kid": k, "class": c, "subject_hash": h} for k, c, h in wanted]}
        got = self._request("POST", "/keys/decrypt", body=body)["keys"]
        return {kid: base64.b64decode(v["dek"]) if "dek" in v else str(v["error"]) for kid, v in got.items()}

    def schema(self, topic: str, event_type: str, version: int | None) -> dict[str, Any]:
        params = {"version": version} if version is not None else None
        return self._request("GET", f"/schemas/{topic}/{event_type}", params=params)

    def topic(self, topic: str) -> dict[str, Any]:
        return self._request("GET", f"/topics/{topic}")

    def trust_entries(self) -> list[dict[str, str]]:
        return self._request("GET", "/trust")["entries"]

    def notices(self, after: float, wait: float) -> dict[str, str]:
        return self._request("GET", "/notices", params={"after": repr(after), "wait": wait},
                             timeout=self._timeout + wait)

    def decide(self, action: str, resource: Resource, context: dict[str, Any] | None,
               about: str | None = None) -> bool:
        body: dict[str, Any] = {"action": action, "resource": {"kind": resource[0], "id": resource[1]},
                                "context": context or {}}
        if about is not None:
            body["about"] = about
        return bool(self._request("POST", "/decide", body=body)["allowed"])


    def register_group(self, group: str) -> None:
        self._request("POST", "/groups", body={"group": group})

    def erasures_due(self, group: str) -> list[str]:
        return list(self._request("GET", f"/groups/{group}/erasures")["due"])

    def acknowledge(self, group: str, pseudonym: str, error: str | None) -> bool:
        body: dict[str, Any] = {"subject": pseudonym}
        if error is not None:
            body["error"] = error
        return bool(self._request("POST", f"/groups/{group}/acks", body=body)["completed"])


def _raise(r: requests.Response) -> None:
    try:
        problem = r.json()
    except ValueError:
        problem = {}
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {r.status_code}")[:300]
    if problem.get("code") in ("kms_unavailable", "keystore_unavailable", "control_plane_unavailable"):
        raise ControlPlaneUnavailable(f"the control plane cannot release keys now: {detail}")
    raise _ERRORS.get(r.status_code, InputError)(detail)
