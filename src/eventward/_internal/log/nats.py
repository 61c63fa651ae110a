"""NATS JetStream transport: one JetStream stream per eventward stream, one message per sealed batch.

Why one message per batch (bench/bench_nats.py measured both): a JetStream message is stored
atomically and deduplicated by ``Nats-Msg-Id``, so a batch message makes ``append`` atomic and
idempotent without the atomic-batch API, stores the seal once, and costs one PubAck round
trip per batch instead of per event. The price is that JetStream sequences count batches, not
events, so this module maps them:

* Offsets. Every message carries its first event offset (``Ew-Offset``) and event count
  (``Ew-Count``). A producer takes the stream's last message (sequence S, ending at offset E),
  publishes with ``Ew-Offset: E`` and ``Nats-Expected-Last-Sequence: S``; if anyone appended
  in between, the server refuses ("wrong last sequence"), and the producer re-reads the tail
  and retries. Offsets stay dense and unique with any number of producers, and a stored
  message's offsets never change. Streams are created deny-delete/deny-purge, so sequences
  are dense too (sequence k is the k-th batch), which makes a seek an interpolation search.
* Idempotence. ``Nats-Msg-Id`` is a digest of the batch id: a retry inside the stream's
  duplicate window (default 10 min) is acknowledged with the original sequence and stores
  nothing. Beyond the window a retry would be stored again; producers retry within seconds
  and consumers reject duplicate event ids regardless.
* Durability. ``append`` returns only after the JetStream PubAck, i.e. after the stream's
  replicas (a quorum) stored the batch.
* Reads fetch batches with direct gets (raw bytes, no JSON/base64, any replica, pipelined).
  A lagging replica may not have a sequence yet, so only the stream leader
  (``STREAM.MSG.GET``) may end a read: a read never misses an acknowledged batch. A full
  page starts a bounded read-ahead of the next page, which the next read at that offset takes
  (on the calling thread when it is finished); it is a cache of stored, immutable batches and
  moves no group position (see ``_read``).
* Consumer groups keep the exact event offset in the KV bucket ``EW_OFFSETS``: a JetStream
  consumer's ack floor counts messages, and a group may stop in the middle of a batch.
* Every JetStream call is retried with bounded, jittered exponential backoff (log/retry.py);
  a permissions violation reported by the server is raised at once as AccessDenied.

``producer_permissions``/``consumer_permissions`` list the subjects each role needs, so the
compiled NATS authorization (policy/compile_nats.py) grants exactly what this module uses.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from eventward._internal.home import read_secret
from eventward._internal.log import framing
from eventward._internal.log.base import Record
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.retry import Backoff, Retry, retry_async
from eventward.errors import (
    AccessDenied,
    AuthenticationError,
    ConfigError,
    ConflictError,
    CorruptedMessage,
    EventwardError,
    InputError,
    NotFoundError,
    OversizeError,
    TransportError,
    TransportUnavailable,
)

T = TypeVar("T")

OFFSETS_BUCKET = "EW_OFFSETS"
_OFFSETS_STREAM = f"KV_{OFFSETS_BUCKET}"
_H_OFFSET, _H_COUNT = "Ew-Offset", "Ew-Count"
_HEADROOM = 1024  # headers and protocol framing next to the payload
_PIPELINE = 32  # message gets in flight per read
_INDEX_MAX = 100_000  # remembered (offset, sequence) pairs per stream for seeks
_AHEAD_MAX = 8  # pages read ahead per transport (one per reader position)
_AHEAD_TTL_S = 30.0  # a page read ahead and not asked for within this is dropped (the reader moved)
_WRONG_LAST_SEQ = 10071
_STREAM_NOT_FOUND = 10059
_NO_MESSAGE = 10037
_STREAM_EXISTS_DIFFERENT = 10058
_NO_PEERS = 10005
_CONSUMER_NOT_FOUND = 10014
_DURABLE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _SslEofNoise(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes; it is harmless and would drown logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_SslEofNoise())


# --- names: one mapping, shared with the policy compiler --------------------------------------


def _escape(name: str) -> str:
    """Injective map onto one NATS token of [A-Za-z0-9-_]: every other UTF-8 byte (and '_')
    becomes _HH (the same rule as policy.compile_nats.token)."""
    return "".join(
        chr(b) if (b < 0x80 and chr(b).isalnum()) or b == 0x2D else f"_{b:02X}" for b in name.encode()
    )


def _unescape(token: str) -> str:
    return re.sub(rb"_([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), token.encode()).decode()


def stream_name(stream: str) -> str:
    """The JetStream stream that holds eventward stream ``stream``."""
    return "EW_" + _escape(check_stream_name(stream))


def subject_for(stream: str) -> str:
    """The subject batches of ``stream`` are published on: the policy compiler's one mapping,
    so compiled permissions name exactly the subjects this transport uses."""
    from eventward._internal.policy.compile_nats import nats_subject  # lazy: that module imports this one

    return nats_subject(check_stream_name(stream))


def inbox_prefix_for(principal: str) -> str:
    """The private reply inbox the compiled NATS config lets ``principal`` subscribe to."""
    from eventward._internal.policy.compile_nats import nats_inbox_prefix

    return nats_inbox_prefix(principal)


def _offsets_key(group: str, stream: str) -> str:
    return f"{_escape(group)}.{_escape(stream)}"


def producer_permissions(stream: str) -> list[str]:
    """Subjects a producer of ``stream`` must be allowed to publish to (plus its reply inbox).

    STREAM.INFO and MSG.GET read the tail for the offset CAS (and resolve a deduplicated retry);
    STREAM.INFO also answers ``has_stream``. No stream listing: it would reveal every topic."""
    js = stream_name(stream)
    return [
        subject_for(stream),
        f"$JS.API.STREAM.INFO.{js}",
        f"$JS.API.STREAM.MSG.GET.{js}",
    ]


def consumer_permissions(stream: str, group: str | None = None) -> list[str]:
    """Subjects a reader of ``stream`` (committing for ``group``, or any group) must be allowed."""
    js = stream_name(stream)
    key = f"{_escape(group)}.{_escape(stream)}" if group else f"*.{_escape(stream)}"
    return [
        f"$JS.API.STREAM.INFO.{js}",
        f"$JS.API.STREAM.MSG.GET.{js}",
        f"$JS.API.DIRECT.GET.{js}",
        f"$JS.API.STREAM.MSG.GET.{_OFFSETS_STREAM}",
        f"$KV.{OFFSETS_BUCKET}.{key}",
    ]


def admin_permissions() -> list[str]:
    """Creating streams and the offsets bucket needs the JetStream API at large."""
    return ["$JS.API.>", "ew.>", f"$KV.{OFFSETS_BUCKET}.>"]


def _msg_id(batch_id: str) -> str:
    # A digest, so any batch id (whatever its characters) is a valid header value.
    return hashlib.sha256(batch_id.encode()).hexdigest()[:40]


def _redact(server: str) -> str:
    """A server URL without user:password@ (never put credentials into an error message)."""
    return re.sub(r"//[^@/]*@", "//", server)


# --- the private event loop ---------------------------------------------------------------------


class _LoopThread:
    """nats-py is asyncio; the Transport protocol is synchronous. One loop, one daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="eventward-nats", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """``coro``'s result, run on the loop thread; the caller blocks on one plain lock that the
        task's done callback releases (not ``run_coroutine_threadsafe``'s Condition and chained
        futures: every append and commit is one such hand-off, and this is a third cheaper)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise TransportError(f"{what}: called from the NATS loop thread (would deadlock)")
        done = threading.Lock()
        done.acquire()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self.loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(lambda _: done.release())

        self.loop.call_soon_threadsafe(start)
        if not done.acquire(timeout=timeout):
            # start ran first (one loop, callbacks in order) unless the loop stopped meanwhile
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(lambda: tasks and tasks[0].cancel())
            raise TransportUnavailable(f"{what}: no answer within {timeout:.0f}s")
        task = tasks[0]
        if task.cancelled():  # the transport is closing under this call
            raise TransportUnavailable(f"{what}: cancelled (the NATS transport is closing)")
        return task.result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


# --- the transport -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamStats:
    """One eventward stream as JetStream stores it: events are eventward offsets, batches messages."""

    stream: str
    jetstream: str
    events: int | None  # None when the stream's last batch cannot be read (see ``error``)
    batches: int
    bytes: int
    first_seq: int
    last_seq: int
    replicas: int
    leader: str | None
    consumers: int  # native JetStream consumers (eventward groups live in EW_OFFSETS)
    error: str | None = None  # why ``events`` is unknown: a corrupted or foreign message at the tail


@dataclass(frozen=True)
class GroupOffset:
    group: str
    stream: str
    committed: int  # the next event offset the group will read


@dataclass(frozen=True)
class JetStreamConsumer:
    stream: str
    name: str
    pending: int  # messages (sealed batches) not yet delivered
    ack_pending: int


@dataclass(frozen=True)
class TailedBatch:
    """One sealed batch as a durable tail delivered it (``NatsTransport.tail``)."""

    stream: str
    seq: int  # JetStream stream sequence (one per batch, dense)
    first_offset: int  # eventward offset of its first event (-1 when ``batch`` is None)
    batch: framing.Batch | None  # batch id, exact event bytes, seal; None: not an eventward batch


@dataclass(frozen=True, slots=True)
class _Tail:
    seq: int  # JetStream sequence of the stream's last batch (0: empty)
    end: int  # offset the next event gets


@dataclass(frozen=True, slots=True)
class _Stored:
    seq: int
    first: int
    batch: framing.Batch

    @property
    def end(self) -> int:
        return self.first + len(self.batch.events)


class _Index:
    """Known (first offset, sequence) pairs of one stream, to narrow a seek."""

    def __init__(self) -> None:
        # Streams start at sequence 1 and offset 0: reading from the start needs no seek.
        self.offsets: list[int] = [0]
        self.seqs: list[int] = [1]

    def learn(self, first: int, seq: int) -> None:
        i = bisect.bisect_left(self.offsets, first)
        if i < len(self.offsets) and self.offsets[i] == first:
            return
        if len(self.offsets) >= _INDEX_MAX:
            self.offsets[:], self.seqs[:] = [0], [1]
            i = bisect.bisect_left(self.offsets, first)
        self.offsets.insert(i, first)
        self.seqs.insert(i, seq)

    def exact(self, offset: int) -> int | None:
        """Sequence of the batch known to start at ``offset``."""
        i = bisect.bisect_left(self.offsets, offset)
        return self.seqs[i] if i < len(self.offsets) and self.offsets[i] == offset else None

    def first_of(self, seq: int) -> int | None:
        """First offset of the batch at ``seq``, if known."""
        i = bisect.bisect_left(self.seqs, seq)
        return self.offsets[i] if i < len(self.seqs) and self.seqs[i] == seq else None

    def bounds(self, offset: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """Nearest known (first, seq) at or below ``offset`` and strictly above it."""
        i = bisect.bisect_right(self.offsets, offset)
        lo = (self.offsets[i - 1], self.seqs[i - 1]) if i else None
        hi = (self.offsets[i], self.seqs[i]) if i < len(self.offsets) else None
        return lo, hi


class NatsTransport:
    """Transport over NATS JetStream (mTLS, user/password, token or creds-file authentication).

    Thread-safe: calls from any thread are run on one private event loop; appends to one
    stream from one instance are serialized (other instances/processes are handled by the
    optimistic concurrency described in the module docstring).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        replicas: int = 1,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | Path | None = None,
        timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        duplicate_window_s: float = 600.0,
        inbox_prefix: str | None = None,
        name: str = "eventward",
    ) -> None:
        if replicas not in (1, 3, 5):
            raise InputError("NATS stream replicas must be 1, 3 or 5 (an odd quorum)")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff(budget_s=max(15.0, 3 * timeout_s))
        self.duplicate_window_s = duplicate_window_s
        self._tails: dict[str, _Tail] = {}
        self._indexes: dict[str, _Index] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # subject -> requests in flight on it; a permissions violation for the subject cancels
        # them and marks them in _denied, so _request tells the refusal from its caller's cancel
        self._denials: dict[str, set[asyncio.Task[Msg]]] = {}
        self._denied: set[asyncio.Task[Msg]] = set()
        self._tails_subs: dict[tuple[str, str], Any] = {}  # (stream, durable) -> pull subscription
        # (stream, offset) -> (the page read ahead from there, when it started): started and dropped
        # on the loop thread, claimed when finished by the reading thread (single dict operations)
        self._ahead: dict[tuple[str, int], tuple[asyncio.Task[list[_Stored] | None], float]] = {}
        self._connect_failure: asyncio.Future[EventwardError] | None = None
        self._closed = False
        options = self._options(ca, cert, key, user, password, token, creds, inbox_prefix, name)
        self._loop = _LoopThread()
        try:
            self._nc: Client = self._loop.run(self._connect(options), timeout_s * 4 + 5, "connect to NATS")
        except BaseException:
            self._loop.stop()
            raise

    @classmethod
    def from_config(cls, cfg: Any) -> NatsTransport:
        """Build from ``eventward._internal.config.NatsConfig`` (the password comes from an env variable)."""
        password = None
        if cfg.password_env:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise ConfigError(f"nats.password_env names {cfg.password_env}, which is not set")
        return cls(
            cfg.servers, replicas=cfg.replicas, ca=cfg.ca, cert=cfg.cert, key=cfg.key, user=cfg.user,
            password=password, creds=cfg.creds, timeout_s=cfg.timeout_s,
        )

    # --- connection ---------------------------------------------------------------------------
    def _options(
        self,
        ca: str | Path | None,
        cert: str | Path | None,
        key: str | Path | None,
        user: str | None,
        password: str | None,
        token: str | None,
        creds: str | Path | None,
        inbox_prefix: str | None,
        name: str,
    ) -> dict[str, Any]:
        if inbox_prefix is None:  # the principal's private inbox: replies (message gets) stay private
            principal = _cert_cn(Path(cert)) if cert is not None else user
            inbox_prefix = inbox_prefix_for(principal) if principal else "_INBOX"
        opts: dict[str, Any] = {
            "name": name,
            "inbox_prefix": inbox_prefix,
            "connect_timeout": max(1, math.ceil(self.timeout_s)),
            "reconnect_time_wait": 0.25,
            "max_reconnect_attempts": -1,  # ride out restarts; every call is bounded instead
            "ping_interval": 5,
            "max_outstanding_pings": 3,
        }
        if (cert is None) != (key is None):
            raise ConfigError("NATS client TLS needs both a certificate and its key")
        if ca is not None or cert is not None or any(s.startswith("tls://") for s in self.servers):
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if cert is not None and key is not None:
                read_secret(Path(key))  # refuse a private key others can read
                try:
                    ctx.load_cert_chain(str(cert), str(key))
                except (OSError, ssl.SSLError):
                    raise ConfigError(f"cannot load the NATS client certificate {cert}") from None
                opts["disconnected_cb"] = _reload_cert_chain(ctx, Path(cert), Path(key))
            opts["tls"] = ctx
        if creds is not None:
            read_secret(Path(creds))
            opts["user_credentials"] = str(creds)
        if user is not None:
            opts["user"], opts["password"] = user, password or ""
        if token is not None:
            opts["token"] = token
        return opts

    async def _connect(self, options: dict[str, Any]) -> Client:
        loop = asyncio.get_running_loop()
        self._connect_failure = loop.create_future()
        nc = Client()
        task = asyncio.ensure_future(nc.connect(self.servers, error_cb=self._on_error, **options))
        done, _ = await asyncio.wait(
            {task, self._connect_failure}, timeout=self.timeout_s * 2 + 1, return_when=asyncio.FIRST_COMPLETED
        )
        failure = self._connect_failure
        self._connect_failure = None
        if task in done and task.exception() is None:
            return nc
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _quiet_close(nc)
        where = ", ".join(_redact(s) for s in self.servers)
        if failure in done:
            raise failure.result()
        raise TransportUnavailable(f"cannot connect to NATS at {where}")

    async def _on_error(self, e: Exception) -> None:
        """Errors the client reports asynchronously: auth failures and permission violations."""
        text = str(e)
        if self._connect_failure is not None and not self._connect_failure.done():
            if isinstance(e, nats.errors.AuthorizationError) or "authorization" in text.lower():
                self._connect_failure.set_result(
                    AuthenticationError("NATS refused the connection: authorization violation")
                )
            elif isinstance(e, ssl.SSLError | nats.errors.SecureConnFailedError):
                self._connect_failure.set_result(
                    AuthenticationError(f"TLS handshake with NATS failed ({type(e).__name__})")
                )
        for s, waiters in list(self._denials.items()):
            if _violation_about(s, text):
                for w in waiters:
                    if not w.done():
                        self._denied.add(w)
                        w.cancel()

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
        """One request, raced against a server permissions violation for its subject: ``_on_error``
        cancels the request and marks it denied (one task per request and no ``asyncio.wait``,
        which cost a third of the request's own Python on every append, get and commit)."""
        req = asyncio.ensure_future(self._nc.request(subject, payload, timeout=self.timeout_s, headers=headers))
        waiters = self._denials.setdefault(subject, set())
        waiters.add(req)
        try:
            return await req
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if req in self._denied and not (task and task.cancelling()):  # refused, and our caller goes on
                raise AccessDenied(f"the NATS server refused this principal access to {subject}") from None
            req.cancel()  # our caller was cancelled (a read-ahead dropped, or close): nothing left pending
            raise
        finally:
            self._denied.discard(req)
            waiters.discard(req)
            if not waiters and self._denials.get(subject) is waiters:
                del self._denials[subject]

    async def _api(self, subject: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """A JetStream API request; transient failures become ``Retry``."""
        try:
            msg = await self._request(subject, json.dumps(body).encode())
        except Exception as e:
            raise _classify(e, what) from None
        try:
            resp = json.loads(msg.data)
        except ValueError:
            raise TransportError(f"{what}: malformed JetStream API response") from None
        err = resp.get("error")
        if err and (err.get("code") in (500, 503) or err.get("err_code") == 10008):
            raise Retry(f"JetStream unavailable ({err.get('code')})")
        return resp

    def _run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        if self._closed:
            coro.close()
            raise TransportError(f"{what}: the NATS transport is closed")
        return self._loop.run(coro, self.backoff.budget_s + 2 * self.timeout_s + 5, what)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await retry_async(what, attempt, self.backoff)

    # --- streams --------------------------------------------------------------------------------
    def create_stream(self, stream: str, *, replicas: int | None = None) -> None:
        """Idempotent. ``replicas`` defaults to the transport's; an existing stream with another
        replica count is a ConflictError (changing it is an operator's decision)."""
        r = self.replicas if replicas is None else replicas
        if r not in (1, 3, 5):
            raise InputError("NATS stream replicas must be 1, 3 or 5 (an odd quorum)")
        self._run(self._create_stream(stream, r), f"create stream {stream}")

    async def _create_stream(self, stream: str, replicas: int) -> None:
        name = stream_name(stream)
        cfg = api.StreamConfig(
            name=name,
            subjects=[subject_for(stream)],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=self.duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
            metadata={"eventward.stream": stream, "eventward.format": framing.MAGIC.decode()},
        )
        await self._ensure_stream(name, cfg.as_dict(), f"create stream {stream}")
        kv = api.StreamConfig(
            name=_OFFSETS_STREAM,
            subjects=[f"$KV.{OFFSETS_BUCKET}.>"],
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            max_msgs_per_subject=1,
            discard=api.DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            deny_delete=True,
            allow_direct=True,
        )
        await self._ensure_stream(_OFFSETS_STREAM, kv.as_dict(), "create the consumer offsets bucket",
                                  tolerate_different=True)

    async def _ensure_stream(
        self, name: str, cfg: dict[str, Any], what: str, tolerate_different: bool = False
    ) -> None:
        async def attempt() -> None:
            resp = await self._api(f"$JS.API.STREAM.CREATE.{name}", cfg, what)
            err = resp.get("error")
            if err is None:
                return
            if err.get("err_code") == _NO_PEERS:  # a forming cluster, or fewer servers than replicas
                raise Retry(f"not enough servers for {cfg.get('num_replicas')} replicas (yet)")
            if err.get("err_code") == _STREAM_EXISTS_DIFFERENT:
                if tolerate_different:
                    return
                info = await self._api(f"$JS.API.STREAM.INFO.{name}", {}, what)
                have = (info.get("config") or {}).get("num_replicas")
                raise ConflictError(f"{what}: it exists with another configuration ({have} replicas)")
            raise _refused(what, err)

        await self._retry(what, attempt)

    def has_stream(self, stream: str) -> bool:
        """Does ``stream`` exist? One STREAM.INFO of that stream: producers and consumers are
        granted exactly that, never the listing of every stream (STREAM.NAMES, operators only)."""
        check_stream_name(stream)
        what = f"stream info of {stream}"

        async def attempt() -> bool:
            info = await self._api(f"$JS.API.STREAM.INFO.{stream_name(stream)}", {}, what)
            err = info.get("error")
            if err is None:
                return True
            if err.get("err_code") == _STREAM_NOT_FOUND:
                return False
            raise _refused(what, err)

        return self._run(self._retry(what, attempt), what)

    def streams(self) -> list[str]:
        """Every eventward stream (STREAM.NAMES: an operator's call, reveals all stream names)."""
        return self._run(self._streams(), "list streams")

    async def _streams(self) -> list[str]:
        names: list[str] = []
        while True:
            offset = len(names)
            resp = await self._retry(
                "list streams",
                lambda o=offset: self._api("$JS.API.STREAM.NAMES", {"offset": o}, "list streams"),
            )
            page = resp.get("streams") or []
            names.extend(page)
            if not page or len(names) >= resp.get("total", 0):
                break
        return sorted(_unescape(n[3:]) for n in names if n.startswith("EW_"))

    def stream_leader(self, stream: str) -> str | None:
        """Name of the server leading ``stream``'s replicas (None: single server or no leader)."""
        what = f"stream info of {stream}"

        async def attempt() -> str | None:
            info = await self._api(f"$JS.API.STREAM.INFO.{stream_name(stream)}", {}, what)
            if info.get("error"):
                raise _refused(what, info["error"])
            return (info.get("cluster") or {}).get("leader")

        return self._run(self._retry(what, attempt), what)

    def end_offset(self, stream: str) -> int:
        check_stream_name(stream)
        what = f"end offset of {stream}"
        return self._run(self._retry(what, lambda: self._tail_once(stream)), what).end

    # --- append ---------------------------------------------------------------------------------
    def append(self, stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        check_stream_name(stream)
        payload = framing.encode(batch_id, events, seal)
        limit = self._nc.max_payload - _HEADROOM
        if len(payload) > limit:
            raise OversizeError(
                f"batch for {stream} is {len(payload)} bytes; the NATS server accepts {limit} per batch "
                f"(flush smaller batches or raise max_payload)",
                size=len(payload), limit=limit,
            )
        return self._run(self._append(stream, batch_id, len(events), payload), f"append to {stream}")

    async def _append(self, stream: str, batch_id: str, count: int, payload: bytes) -> int:
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            return await self._retry(
                f"append to {stream}", lambda: self._publish_once(stream, batch_id, count, payload)
            )

    async def _publish_once(self, stream: str, batch_id: str, count: int, payload: bytes) -> int:
        tail = self._tails.get(stream) or await self._tail_once(stream, missing_ok=False)
        headers = {
            "Nats-Msg-Id": _msg_id(batch_id),
            "Nats-Expected-Stream": stream_name(stream),
            "Nats-Expected-Last-Sequence": str(tail.seq),
            _H_OFFSET: str(tail.end),
            _H_COUNT: str(count),
        }
        try:
            msg = await self._request(subject_for(stream), payload, headers)
        except nats.errors.NoRespondersError:
            self._tails.pop(stream, None)
            await self._tail_once(stream, missing_ok=False)  # NotFoundError if there is no stream
            raise Retry("no stream leader") from None
        except Exception as e:
            self._tails.pop(stream, None)  # the batch may or may not be stored: re-read the tail
            raise _classify(e, f"append to {stream}") from None
        ack = _json(msg.data, f"append to {stream}")
        err = ack.get("error")
        if err:
            self._tails.pop(stream, None)
            if err.get("err_code") == _WRONG_LAST_SEQ:
                raise Retry("another producer appended first")
            if err.get("code") in (500, 503):
                raise Retry(f"JetStream unavailable ({err.get('code')})")
            raise _refused(f"append to {stream}", err)
        seq = int(ack["seq"])
        if ack.get("duplicate"):  # a retry of a stored batch: answer with the original's offset
            stored = await self._get_once(stream, seq, leader=True)
            if stored is None or stored.batch.batch_id != batch_id:
                raise TransportError(f"append to {stream}: duplicate acknowledgement points at another batch")
            return stored.first
        self._tails[stream] = _Tail(seq, tail.end + count)
        self._index(stream).learn(tail.end, seq)
        self._index(stream).learn(tail.end + count, seq + 1)
        return tail.end

    # --- read -----------------------------------------------------------------------------------
    def read(self, stream: str, offset: int, max_records: int) -> list[Record]:
        check_stream_name(stream)
        if max_records <= 0:
            return []
        offset = max(0, offset)
        ready = None if self._closed else self._claim_ready(stream, offset, max_records)
        if ready is not None:
            return ready
        return self._run(self._read(stream, offset, max_records), f"read from {stream}")

    def _claim_ready(self, stream: str, offset: int, max_records: int) -> list[Record] | None:
        """A finished read-ahead holding a full page at ``offset``, taken on the calling thread:
        no hand-off to the event loop thread and back (on a busy machine waking each thread
        costs more than the page's round trip). Anything else goes through ``_read``."""
        key = (stream, offset)
        entry = self._ahead.get(key)
        if entry is None or not entry[0].done() or entry[0].cancelled() or not self._nc.is_connected:
            return None  # disconnected (a revoked certificate closes the connection): read live, which says why
        batches = entry[0].result()
        if not batches or batches[-1].end - offset < max_records or self._ahead.pop(key, None) is not entry:
            return None  # short (the end then), failed, or claimed by another thread meanwhile
        out = _records(stream, offset, batches, max_records)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to read ahead for
            self._loop.loop.call_soon_threadsafe(self._start_ahead, stream, out[-1].offset + 1, max_records)
        return out

    async def _read(self, stream: str, offset: int, max_records: int) -> list[Record]:
        """Records from the read-ahead the previous read started when it is for ``offset``, else
        fetched now; a full page starts the read-ahead of the next one.

        Read-ahead overlaps the next page's round trips with the caller's work on this one. It
        is only ever a cache of what a read at that offset would return: stored batches are
        immutable (deny-delete, deny-purge, dense offsets checked on decode), a short read-ahead
        (the end of the stream at the time) is completed live, and a failed one is read again
        live, so its error is the caller's. Nothing moves a group's position but ``commit``, so a
        reader that stops (close, crash) with a read-ahead in flight resumes at its commit."""
        batches = await self._take_ahead(stream, offset)
        if batches:
            have = batches[-1].end - offset
            if have < max_records:  # the read-ahead reached the end then: continue from there live
                batches += await self._batches(stream, batches[-1].end, max_records - have)
        else:
            batches = await self._batches(stream, offset, max_records)
        out = _records(stream, offset, batches, max_records)
        if len(out) == max_records:  # behind the end: the next page is wanted soon
            self._start_ahead(stream, out[-1].offset + 1, max_records)
        return out

    async def _batches(self, stream: str, offset: int, max_records: int) -> list[_Stored]:
        """The stored batch holding ``offset`` and the ones after it, until they hold
        ``max_records`` events from ``offset`` on or the stream ends; [] at or past the end."""
        start = await self._find(stream, offset)
        if start is None:
            return []
        out = [start]
        have = start.end - offset
        seq, expected, per_batch = start.seq + 1, start.end, len(start.batch.events)
        while have < max_records:
            n = min(_PIPELINE, max(1, math.ceil((max_records - have) / per_batch)))
            got = await asyncio.gather(*(self._get(stream, s) for s in range(seq, seq + n)))
            for stored in got:
                # A replica may lag; only the stream leader may say a sequence does not exist.
                stored = stored or await self._get(stream, seq, leader=True)
                if stored is None:
                    return out
                if stored.first != expected:
                    raise CorruptedMessage(
                        f"stream {stream}: the batch at sequence {seq} does not continue the offsets "
                        f"(foreign or corrupted message)"
                    )
                out.append(stored)
                have += len(stored.batch.events)
                seq, expected = seq + 1, stored.end
                if have >= max_records:
                    break
        return out

    def _start_ahead(self, stream: str, offset: int, max_records: int) -> None:
        """Fetch the page at ``offset`` in the background. Bounded: at most ``_AHEAD_MAX`` pages
        per transport (one per reader position, so several groups reading one stream through one
        transport do not evict each other); a page not claimed within ``_AHEAD_TTL_S`` (its reader
        sought elsewhere or stopped) is dropped here, the oldest first when the bound is reached."""
        key = (stream, offset)
        if key in self._ahead or self._closed:
            return
        now = time.monotonic()
        for old, (_, started) in list(self._ahead.items()):
            if now - started > _AHEAD_TTL_S:
                self._drop_ahead(old)
        while len(self._ahead) >= _AHEAD_MAX:  # the oldest first (dicts keep insertion order)
            self._drop_ahead(next(iter(self._ahead)))
        self._ahead[key] = (asyncio.get_running_loop().create_task(self._read_ahead(stream, offset, max_records)), now)

    def _drop_ahead(self, key: tuple[str, int]) -> None:
        entry = self._ahead.pop(key, None)
        if entry is not None:
            entry[0].cancel()

    async def _drop_all_ahead(self) -> None:
        tasks = [task for task, _ in list(self._ahead.values())]
        self._ahead.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _take_ahead(self, stream: str, offset: int) -> list[_Stored] | None:
        """The read-ahead's batches for ``offset`` (None: there is none, or it failed). A popped
        task is nobody else's to cancel, so awaiting it yields its result."""
        entry = self._ahead.pop((stream, offset), None)
        if entry is None or entry[0].cancelled():
            return None
        batches = await entry[0]
        return batches if self._nc.is_connected else None  # nothing fetched before a disconnect is served after it

    async def _read_ahead(self, stream: str, offset: int, max_records: int) -> list[_Stored] | None:
        try:
            return await self._batches(stream, offset, max_records)
        except asyncio.CancelledError:
            raise
        except Exception:  # read again live when claimed, which reports the error
            return None

    async def _find(self, stream: str, offset: int) -> _Stored | None:
        """The stored batch holding ``offset`` (None: at or past the end).

        Sequential reads hit the index (the next batch starts where the last one ended);
        a seek is an interpolation search over sequences, with bisection steps interleaved
        so a stream of very uneven batches cannot make it linear."""
        index = self._index(stream)
        seq = index.exact(offset)
        if seq is not None:
            return await self._get(stream, seq) or await self._get(stream, seq, leader=True)
        tail = await self._retry(f"read from {stream}", lambda: self._tail_once(stream))
        if offset >= tail.end:
            return None
        lo_known, hi_known = index.bounds(offset)
        lo = lo_known or (0, 1)
        hi = hi_known or (tail.end, tail.seq + 1)  # a virtual batch just past the end
        for step in range(128):
            if hi[1] - lo[1] <= 1:
                guess = lo[1]
            elif step % 2 == 0:
                span = (offset - lo[0]) * (hi[1] - lo[1]) // max(1, hi[0] - lo[0])
                guess = min(hi[1] - 1, max(lo[1], lo[1] + span))
            else:
                guess = (lo[1] + hi[1]) // 2
            stored = await self._get(stream, guess) or await self._get(stream, guess, leader=True)
            if stored is None:
                break
            if stored.first <= offset < stored.end:
                return stored
            if offset < stored.first:
                hi = (stored.first, stored.seq)
            else:
                lo = (stored.end, stored.seq + 1)
        raise CorruptedMessage(
            f"stream {stream}: offset {offset} is not where the offset index says (corrupted stream)"
        )

    async def _tail_once(self, stream: str, missing_ok: bool = True) -> _Tail:
        """Sequence and end offset of the stream's last batch, as the stream leader sees it."""
        what = f"read the end of {stream}"
        info = await self._api(f"$JS.API.STREAM.INFO.{stream_name(stream)}", {}, what)
        err = info.get("error")
        if err:
            if err.get("err_code") == _STREAM_NOT_FOUND:
                if missing_ok:
                    return _Tail(0, 0)
                raise NotFoundError(f"stream {stream!r} does not exist")
            raise _refused(what, err)
        last = int((info.get("state") or {}).get("last_seq", 0))
        if last == 0:
            return _Tail(0, 0)
        end = self._index(stream).first_of(last + 1)
        if end is None:
            stored = await self._get_once(stream, last, leader=True)
            if stored is None:
                raise TransportError(f"{what}: the last batch (sequence {last}) is missing")
            end = stored.end
        return _Tail(last, end)

    async def _get(self, stream: str, seq: int, leader: bool = False) -> _Stored | None:
        return await self._retry(f"read from {stream}", lambda: self._get_once(stream, seq, leader))

    async def _get_once(self, stream: str, seq: int, leader: bool = False) -> _Stored | None:
        """The batch at ``seq`` (None: no such message). Any replica answers a direct get
        (raw bytes, no JSON/base64); ``leader`` asks the stream leader (authoritative)."""
        what = f"read from {stream}"
        name = stream_name(stream)
        body = json.dumps({"seq": seq}).encode()
        if leader:
            resp = await self._api(f"$JS.API.STREAM.MSG.GET.{name}", {"seq": seq}, what)
            err = resp.get("error")
            if err:
                if err.get("err_code") == _NO_MESSAGE or err.get("code") == 404:
                    return None
                raise _refused(what, err)
            m = resp["message"]
            headers = _parse_headers(base64.b64decode(m.get("hdrs") or ""))
            return self._decode(stream, int(m["seq"]), headers, base64.b64decode(m.get("data") or ""))
        try:
            msg = await self._request(f"$JS.API.DIRECT.GET.{name}", body)
        except Exception as e:
            raise _classify(e, what) from None
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            if status in ("408", "503"):
                raise Retry(f"direct get status {status}")
            raise TransportError(f"{what}: direct get failed with status {status}")
        return self._decode(stream, int(headers.get("Nats-Sequence", seq)), headers, msg.data)

    def _decode(self, stream: str, seq: int, headers: dict[str, str], data: bytes) -> _Stored:
        where = f"stream {stream} sequence {seq}"
        batch = framing.decode(data, where)
        try:
            first, count = int(headers[_H_OFFSET]), int(headers[_H_COUNT])
        except (KeyError, ValueError):
            raise CorruptedMessage(f"{where} has no eventward offset header (foreign message)") from None
        if count != len(batch.events) or first < 0:
            raise CorruptedMessage(f"{where}: offset headers do not match the batch (corrupted message)")
        stored = _Stored(seq, first, batch)
        index = self._index(stream)
        index.learn(first, seq)
        index.learn(stored.end, seq + 1)  # sequences are dense: the next batch starts here
        return stored

    def _index(self, stream: str) -> _Index:
        return self._indexes.setdefault(stream, _Index())

    # --- consumer groups ------------------------------------------------------------------------
    def commit(self, group: str, stream: str, offset: int) -> None:
        _check_group(group)
        check_stream_name(stream)
        if not isinstance(offset, int) or offset < 0:
            raise InputError("a committed offset must be a non-negative integer")
        self._run(self._commit(group, stream, offset), f"commit offset for {stream}")

    async def _commit(self, group: str, stream: str, offset: int) -> None:
        subject = f"$KV.{OFFSETS_BUCKET}.{_offsets_key(group, stream)}"
        what = f"commit offset for {stream}"

        async def attempt() -> None:
            try:
                msg = await self._request(subject, str(offset).encode())
            except nats.errors.NoRespondersError:
                raise Retry("the offsets bucket has no leader (or does not exist yet)") from None
            except Exception as e:
                raise _classify(e, what) from None
            err = _json(msg.data, what).get("error")
            if err:
                if err.get("code") in (500, 503):
                    raise Retry(f"JetStream unavailable ({err.get('code')})")
                raise _refused(what, err)

        await self._retry(what, attempt)

    def committed(self, group: str, stream: str) -> int | None:
        _check_group(group)
        check_stream_name(stream)
        return self._run(self._committed(group, stream), f"read committed offset for {stream}")

    async def _committed(self, group: str, stream: str) -> int | None:
        what = f"read committed offset for {stream}"
        subject = f"$KV.{OFFSETS_BUCKET}.{_offsets_key(group, stream)}"
        resp = await self._retry(
            what,
            lambda: self._api(f"$JS.API.STREAM.MSG.GET.{_OFFSETS_STREAM}", {"last_by_subj": subject}, what),
        )
        err = resp.get("error")
        if err:
            if err.get("err_code") in (_NO_MESSAGE, _STREAM_NOT_FOUND) or err.get("code") == 404:
                return None
            raise _refused(what, err)
        try:
            return int(base64.b64decode(resp["message"]["data"]))
        except (KeyError, ValueError):
            raise TransportError(f"{what}: the stored offset is not an integer (corrupted bucket)") from None

    # --- administration (eventward nats streams|consumers; operator credentials) -----------------
    def stream_stats(self) -> list[StreamStats]:
        """Every eventward stream with its size and end offset (STREAM.LIST: reveals every stream)."""
        return self._run(self._stream_stats(), "list stream statistics")

    async def _stream_stats(self) -> list[StreamStats]:
        what = "list stream statistics"
        infos: list[api.StreamInfo] = []
        while True:
            resp = await self._retry(
                what, lambda o=len(infos): self._api("$JS.API.STREAM.LIST", {"offset": o}, what)
            )
            if resp.get("error"):
                raise _refused(what, resp["error"])
            page = resp.get("streams") or []
            infos.extend(api.StreamInfo.from_response(s) for s in page)
            if not page or len(infos) >= resp.get("total", 0):
                break
        out = []
        for info in infos:
            name = info.config.name or ""
            if not name.startswith("EW_"):
                continue
            stream = _unescape(name[3:])
            events, error = None, None
            try:
                events = (await self._retry(what, lambda s=stream: self._tail_once(s))).end
            except CorruptedMessage as e:
                error = str(e)  # one poisoned stream must not hide the others from the operator
            out.append(StreamStats(
                stream=stream,
                jetstream=name,
                events=events,
                error=error,
                batches=info.state.messages,
                bytes=info.state.bytes,
                first_seq=info.state.first_seq,
                last_seq=info.state.last_seq,
                replicas=info.config.num_replicas or 1,
                leader=info.cluster.leader if info.cluster else None,
                consumers=info.state.consumer_count,
            ))
        return sorted(out, key=lambda s: s.stream)

    def group_offsets(self) -> list[GroupOffset]:
        """Every consumer group's committed offset per stream (the ``EW_OFFSETS`` bucket)."""
        return self._run(self._group_offsets(), "list consumer group offsets")

    async def _group_offsets(self) -> list[GroupOffset]:
        what = "list consumer group offsets"
        prefix = f"$KV.{OFFSETS_BUCKET}."
        resp = await self._retry(
            what,
            lambda: self._api(f"$JS.API.STREAM.INFO.{_OFFSETS_STREAM}", {"subjects_filter": prefix + ">"}, what),
        )
        err = resp.get("error")
        if err:
            if err.get("err_code") == _STREAM_NOT_FOUND:
                return []
            raise _refused(what, err)
        out = []
        for subject in sorted((resp.get("state") or {}).get("subjects") or {}):
            group_token, sep, stream_token = subject[len(prefix):].partition(".")
            if not sep or "." in stream_token:
                continue
            group, stream = _unescape(group_token), _unescape(stream_token)
            committed = await self._committed(group, stream)
            if committed is not None:
                out.append(GroupOffset(group, stream, committed))
        return out

    def jetstream_consumers(self, stream: str) -> list[JetStreamConsumer]:
        """Native JetStream consumers of ``stream`` (eventward itself makes none; other tools may)."""
        check_stream_name(stream)
        what = f"list JetStream consumers of {stream}"

        async def attempt() -> list[JetStreamConsumer]:
            resp = await self._api(f"$JS.API.CONSUMER.LIST.{stream_name(stream)}", {"offset": 0}, what)
            if resp.get("error"):
                raise _refused(what, resp["error"])
            infos = [api.ConsumerInfo.from_response(c) for c in resp.get("consumers") or []]
            return [
                JetStreamConsumer(stream, c.name or "", c.num_pending or 0, c.num_ack_pending or 0)
                for c in infos
            ]

        return self._run(self._retry(what, attempt), what)

    # --- durable tails (the control plane's read-only view of every stream) -----------------------
    def tail(
        self, stream: str, durable: str, *, start_seq: int = 1, max_batches: int = 64, wait_s: float = 1.0
    ) -> list[TailedBatch]:
        """The next sealed batches of ``stream`` delivered to the durable pull consumer ``durable``.

        The consumer is created on first use, delivering from stream sequence ``start_seq``
        (1: the start) with ``AckNone``: it never writes to the stream and needs no ack permission,
        so its server-side position moves on delivery and the caller keeps its own durable record
        of what it processed (see ``tail_position``/``drop_tail``). An existing consumer keeps its
        position and ``start_seq`` is ignored. Returns at most ``max_batches`` batches in sequence
        order, ``[]`` if none arrives within ``wait_s``; a message that is not an eventward batch
        (foreign or corrupted) comes back with ``batch=None``, never skipped silently. Raises
        AccessDenied when the broker refuses this principal the consumer API, TransportError when
        the stream does not exist, TransportUnavailable when the broker does not answer.
        """
        if start_seq < 1 or max_batches < 1 or wait_s <= 0:
            raise InputError("tail needs start_seq >= 1, max_batches >= 1 and wait_s > 0")
        _check_durable(durable)
        return self._run(self._tail(stream, durable, start_seq, max_batches, wait_s), f"tail {stream}")

    async def _tail(
        self, stream: str, durable: str, start_seq: int, max_batches: int, wait_s: float
    ) -> list[TailedBatch]:
        key = (stream, durable)
        sub = self._tails_subs.get(key)
        if sub is None:
            js_name = stream_name(stream)
            what = f"durable tail of {stream}"
            if await self._consumer_info(stream, durable) is None:
                config: dict[str, Any] = {"durable_name": durable, "ack_policy": "none",
                                          "deliver_policy": "all" if start_seq <= 1 else "by_start_sequence"}
                if start_seq > 1:
                    config["opt_start_seq"] = start_seq
                resp = await self._retry(what, lambda: self._api(
                    f"$JS.API.CONSUMER.CREATE.{js_name}.{durable}", {"stream_name": js_name, "config": config}, what))
                if resp.get("error"):
                    raise _refused(what, resp["error"])
            try:
                sub = await self._nc.jetstream().pull_subscribe_bind(durable, stream=js_name)
            except Exception as e:
                raise _classify(e, what) from None
            self._tails_subs[key] = sub
        try:
            msgs = await sub.fetch(max_batches, timeout=wait_s)
        except (TimeoutError, nats.errors.TimeoutError):  # nothing new within wait_s
            return []
        except Exception as e:
            err = _classify(e, f"tail {stream}")
            if isinstance(err, Retry):
                raise TransportUnavailable(f"tail {stream}: broker busy, try again") from None
            raise err from None
        out = []
        for m in msgs:
            seq = m.metadata.sequence.stream
            try:
                stored = self._decode(stream, seq, dict(m.headers or {}), m.data)
            except EventwardError:  # delivered (AckNone) all the same: handed back, never dropped
                out.append(TailedBatch(stream, seq, -1, None))
                continue
            out.append(TailedBatch(stream, seq, stored.first, stored.batch))
        return sorted(out, key=lambda b: b.seq)

    def tail_position(self, stream: str, durable: str) -> int | None:
        """Stream sequence of the last batch delivered to ``durable`` (0: none yet), or None when
        that consumer does not exist. AccessDenied/TransportError as for ``tail``."""
        _check_durable(durable)
        info = self._run(self._consumer_info(stream, durable), f"consumer info of {stream}")
        return None if info is None else int(((info.get("delivered") or {}).get("stream_seq")) or 0)

    def drop_tail(self, stream: str, durable: str) -> None:
        """Delete the durable consumer ``durable`` of ``stream`` (nothing if it does not exist), so the
        next ``tail`` starts again from the sequence it is given."""
        _check_durable(durable)
        self._run(self._drop_tail(stream, durable), f"delete consumer of {stream}")

    async def _drop_tail(self, stream: str, durable: str) -> None:
        sub = self._tails_subs.pop((stream, durable), None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        what = f"delete consumer of {stream}"
        resp = await self._retry(what, lambda: self._api(
            f"$JS.API.CONSUMER.DELETE.{stream_name(stream)}.{durable}", {}, what))
        err = resp.get("error")
        if err and err.get("err_code") not in (_CONSUMER_NOT_FOUND, _STREAM_NOT_FOUND):
            raise _refused(what, err)

    async def _consumer_info(self, stream: str, durable: str) -> dict[str, Any] | None:
        what = f"consumer info of {stream}"
        resp = await self._retry(what, lambda: self._api(
            f"$JS.API.CONSUMER.INFO.{stream_name(stream)}.{durable}", {}, what))
        err = resp.get("error")
        if err:
            if err.get("err_code") == _CONSUMER_NOT_FOUND:
                return None
            raise _refused(what, err)
        return resp

    # --- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._close(), self.timeout_s + 5, "close the NATS connection")
        except TransportUnavailable:
            pass
        finally:
            self._loop.stop()

    async def _close(self) -> None:
        await self._drop_all_ahead()  # nothing read ahead outlives the connection
        await _quiet_close(self._nc)

    def __enter__(self) -> NatsTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NatsTransport(servers={[_redact(s) for s in self.servers]}, replicas={self.replicas})"


# --- helpers ----------------------------------------------------------------------------------------


_TRANSIENT = (
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    ConnectionError,
)


def _records(stream: str, offset: int, batches: Sequence[_Stored], max_records: int) -> list[Record]:
    """At most ``max_records`` records from ``offset`` on, out of contiguous stored batches."""
    out: list[Record] = []
    for stored in batches:
        out.extend(stored.batch.records(stream, stored.first, max(0, offset - stored.first), max_records - len(out)))
        if len(out) >= max_records:
            break
    return out


def _classify(e: BaseException, what: str) -> BaseException:
    """Typed errors pass through, transient ones become Retry, the rest TransportError."""
    if isinstance(e, EventwardError):
        return e
    if isinstance(e, _TRANSIENT):
        return Retry(type(e).__name__)
    if isinstance(e, nats.errors.ConnectionClosedError):
        return TransportUnavailable(f"{what}: the NATS connection is closed")
    return TransportError(f"{what}: {type(e).__name__}")


def _violation_about(subject: str, text: str) -> bool:
    """Is an asynchronous server error a permissions violation refusing ``subject``?

    nats-py lowercases the server's -ERR text but subjects are case-sensitive, so compare
    case-insensitively (``$JS.API.STREAM.INFO.EW_Payments`` arrives as ``..ew_payments``). Two
    pending subjects differing only in case both fail: closed, never retried for the budget.
    A refused subscription (our reply inbox) fails every pending request."""
    low = text.lower()
    if "permissions violation" not in low:
        return False
    if "violation for subscription" in low:  # not just "subscription": a subject may contain it
        return True
    m = re.search(r'"([^"]+)"', low)
    return m is not None and m.group(1) == subject.lower()


def _refused(what: str, err: dict[str, Any]) -> TransportError:
    return TransportError(f"{what}: JetStream refused ({err.get('err_code')}: {err.get('description')})")


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise TransportError(f"{what}: malformed JetStream acknowledgement") from None
    if not isinstance(doc, dict):
        raise TransportError(f"{what}: malformed JetStream acknowledgement")
    return doc


def _parse_headers(raw: bytes) -> dict[str, str]:
    """NATS/1.0 header block -> dict (first value wins)."""
    out: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip() not in out:
            out[k.strip()] = v.strip()
    return out


def _cert_cn(path: Path) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        raise ConfigError(f"cannot load the NATS client certificate {path}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _check_durable(name: str) -> None:
    if not isinstance(name, str) or not _DURABLE.fullmatch(name):
        raise InputError("a durable consumer name is 1..64 of letters, digits, '_' and '-'")


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not 0 < len(group) <= 200:
        raise InputError("consumer group name must be 1..200 characters")


def _reload_cert_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> Callable[[], Awaitable[None]]:
    """Re-read the client certificate and key into the context on every disconnect, so the
    reconnect presents a renewed certificate (``eventward pki renew``) without a restart. A pair
    that does not load (mid-rewrite) keeps the one loaded before."""

    async def reload() -> None:
        with contextlib.suppress(OSError, ssl.SSLError, ConfigError):
            read_secret(key)
            ctx.load_cert_chain(str(cert), str(key))

    return reload


async def _quiet_close(nc: Client) -> None:
    """Best effort on shutdown: there is nobody to report a failing close to."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 5)
