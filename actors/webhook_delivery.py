"""One HTTP attempt of a webhook delivery, made safe against the receiver and against DNS.

The host is resolved and checked on every attempt, and the request connects to the address that was
checked (the URL's host travels in the ``Host`` header and, for https, in SNI and the certificate
check), so a name that resolves to a public address at check time and to a private one a moment
later (DNS rebinding) cannot redirect the request. Redirects are not followed, proxies from the
environment are ignored, and only the first few KiB of a response are read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from storage.webhooks import UnsafeUrl, check_url

TIMEOUT_S = 10.0
#: A slow receiver could trickle its body for ever within the per-read timeout; this bounds the whole attempt.
DEADLINE_S = 30.0
READ_CAP_BYTES = 64 * 1024
KEPT_BODY_CHARS = 2048
USER_AGENT = "ReSimHub-Webhooks/0.1"
_CLIENTS_PER_THREAD = 32
#: Addresses tried in turn when connecting fails; bounds an attempt at a few connect timeouts.
MAX_ADDRESSES = 3

# httpx logs every request's URL at INFO; receiver URLs often carry tokens in their query strings, and
# the attempt log already records each request.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: float
    body: str | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Clients(threading.local):
    """Keep-alive connections per worker thread, keyed by the checked address *and* the host name,
    so a TLS connection verified for one name is never reused for another on the same address."""

    def __init__(self) -> None:
        self.clients: OrderedDict[tuple, httpx.Client] = OrderedDict()

    def get(self, key: tuple) -> httpx.Client:
        client = self.clients.pop(key, None)
        if client is None:
            client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False,
                                  limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
                                  headers={"user-agent": USER_AGENT})
            while len(self.clients) >= _CLIENTS_PER_THREAD:
                _, old = self.clients.popitem(last=False)
                old.close()
        self.clients[key] = client
        return client

    def discard(self, key: tuple) -> None:
        client = self.clients.pop(key, None)
        if client is not None:
            client.close()


_clients = _Clients()


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool) -> Outcome:
    """POST ``body`` to ``url`` once; never raises for anything the receiver or the network does."""
    started = time.monotonic()

    def elapsed_ms() -> float:
        return round((time.monotonic() - started) * 1000, 3)

    try:
        target = check_url(url, allow_private=allow_private)
    except UnsafeUrl as exc:
        return Outcome(None, elapsed_ms(), error=f"refused: {exc.reason}")

    netloc = httpx.URL(url).netloc.decode("ascii")
    request_headers = {**headers, "host": netloc, "content-type": "application/cloudevents+json"}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    last_error = "no address to connect to"
    for address in target.addresses[:MAX_ADDRESSES]:
        pinned = httpx.URL(url).copy_with(host=address.split("%", 1)[0], port=target.port)
        key = (target.scheme, target.host, address, target.port)
        client = _clients.get(key)
        try:
            with client.stream("POST", pinned, content=body, headers=request_headers,
                               extensions=extensions) as response:
                received = bytearray()
                for chunk in response.iter_bytes():
                    received += chunk
                    if len(received) >= READ_CAP_BYTES or time.monotonic() - started > DEADLINE_S:
                        break
                text = bytes(received[:READ_CAP_BYTES]).decode("utf-8", "replace")[:KEPT_BODY_CHARS]
                retry_after = None
                if response.status_code in (429, 503):
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                return Outcome(response.status_code, elapsed_ms(), body=text, retry_after_s=retry_after)
        except httpx.ConnectError as exc:
            # Try the next checked address (a name may resolve to both IPv6 and IPv4).
            _clients.discard(key)
            last_error = f"could not connect to {address}: {exc or type(exc).__name__}"
        except httpx.TimeoutException as exc:
            _clients.discard(key)
            return Outcome(None, elapsed_ms(), error=f"timed out after {TIMEOUT_S:g}s ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            _clients.discard(key)
            return Outcome(None, elapsed_ms(), error=f"{type(exc).__name__}: {exc}")
    return Outcome(None, elapsed_ms(), error=last_error)
