"""Kafka transport on confluent-kafka: one topic per stream, one Kafka message per sealed batch.

Same reasoning as NATS (log/framing.py): one message per batch is atomic on the broker and
stores the seal once. The producer is idempotent (``enable.idempotence``, ``acks=all``), so
librdkafka's own retries never duplicate, and ``append`` returns only after the delivery
report, i.e. after all in-sync replicas have the batch.

Offsets. Kafka offsets count messages per partition; the protocol wants dense event offsets
per stream. Each stream is a topic and eventward uses partition 0 only, so the partition is a
total order and a batch's first event offset is a pure function of the log: the sum of the
event counts of the batches before it. Every transport instance derives it the same way by
scanning the partition once (and then only what is new), keeping a compact index
(Kafka offset and first event offset per batch). Several producers need no coordination.

Idempotence. Kafka has no dedup of application retries across producer sessions, so the
same pure-function rule dedups: a message whose batch id equals one of the previous
``DEDUP_WINDOW`` batches is a retry copy; it gets no offsets and is skipped by every reader.
``append`` of a known batch id returns the original offset without producing.

Topics. A stream's topic is its name (``topic_prefix`` is empty by default), which is what
the compiled Kafka ACLs (policy/compile_kafka.py) name; set a prefix only together with
matching ACLs.

Consumer groups commit through Kafka's own group offsets: the committed Kafka offset is the
batch holding the group's position and the exact event offset rides in the commit metadata.

Limits worth knowing: a new transport instance scans the partition once (O(partition) at
start-up); one partition per stream caps a stream at one partition's throughput (scale out
with more streams; partitioning by data subject would need per-partition offsets in the
protocol). Topics need unlimited retention (``create_stream`` sets it): once Kafka trims a
partition, the offsets of what follows cannot be derived and reads raise TransportError.
librdkafka's mock cluster (tests) keeps only ~5 MiB per partition, auto-creates topics and
has no ACLs or admin API, so ``create_topics=False`` there. On a real cluster, the Kafka
ACLs compiled from the policy (``eventward policy compile --target kafka``) must allow the
principal Write/Describe on its topics, Read on the topics and its group, and
IdempotentWrite on the cluster.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from eventward._internal.home import read_secret
from eventward._internal.log import framing
from eventward._internal.log.base import Record
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.retry import Backoff, Retry, retry_sync
from eventward.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    EventwardError,
    InputError,
    NotFoundError,
    OversizeError,
    TransportError,
    TransportUnavailable,
)

T = TypeVar("T")

DEDUP_WINDOW = 100_000  # batches; part of the log's meaning: every reader must use the same value
PARTITION = 0
_META = "ew:"  # commit metadata prefix: "ew:<event offset>"
_DENIED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
_TRANSIENT = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT}
_MISSING = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}


class _Index:
    """What the scan of one partition learned: where each (non-duplicate) batch starts."""

    def __init__(self) -> None:
        self.kafka = array("q")  # Kafka offset of each stored batch, ascending
        self.first = array("q")  # its first event offset, ascending
        self.recent: OrderedDict[str, int] = OrderedDict()  # batch id -> first offset (window)
        self.scanned = 0  # next Kafka offset to scan
        self.end = 0  # next event offset

    def add(self, kafka_offset: int, batch_id: str, count: int) -> int:
        """Index the message at ``kafka_offset`` (must be ``scanned``); returns its first offset,
        or the original's for a retry copy."""
        self.scanned = kafka_offset + 1
        known = self.recent.get(batch_id)
        if known is not None:
            return known
        first = self.end
        self.kafka.append(kafka_offset)
        self.first.append(first)
        self.end += count
        self.recent[batch_id] = first
        if len(self.recent) > DEDUP_WINDOW:
            self.recent.popitem(last=False)
        return first

    def first_of(self, kafka_offset: int) -> int | None:
        """First event offset of a stored batch; None for a retry copy."""
        i = bisect.bisect_left(self.kafka, kafka_offset)
        return self.first[i] if i < len(self.kafka) and self.kafka[i] == kafka_offset else None

    def kafka_of(self, offset: int) -> int:
        """Kafka offset of the batch holding event ``offset`` (``scanned`` at or past the end)."""
        if offset >= self.end:
            return self.scanned
        i = bisect.bisect_right(self.first, offset) - 1
        return self.kafka[max(i, 0)]

    def offset_of(self, kafka_offset: int) -> int:
        """Event offset of the first batch at or after ``kafka_offset``."""
        i = bisect.bisect_left(self.kafka, kafka_offset)
        return self.first[i] if i < len(self.kafka) else self.end


class KafkaTransport:
    """Transport over Kafka. Thread-safe (one lock per instance around index and reader)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        security_protocol: str = "PLAINTEXT",
        ssl_ca: str | Path | None = None,
        ssl_cert: str | Path | None = None,
        ssl_key: str | Path | None = None,
        extra: Mapping[str, Any] | None = None,
        replicas: int = 1,
        topic_prefix: str = "",
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        create_topics: bool = True,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.replicas = replicas
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff(budget_s=max(15.0, 2 * timeout_s))
        self.create_topics = create_topics
        self.max_message_bytes = max_message_bytes
        self._common = self._common_config(
            bootstrap_servers, security_protocol, ssl_ca, ssl_cert, ssl_key, extra
        )
        self._lock = threading.RLock()
        self._indexes: dict[str, _Index] = {}
        self._known_topics: set[str] = set()
        self._groups: dict[str, Consumer] = {}
        self._reader_at: tuple[str, int] | None = None  # (topic, next Kafka offset) the reader sits at
        self._closed = False
        self._producer = Producer(
            {
                **self._common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "message.max.bytes": max_message_bytes + 64 * 1024,
                "delivery.timeout.ms": int(timeout_s * 1000),
            }
        )
        self._reader = self._consumer(f"eventward-reader-{uuid.uuid4().hex}")
        self._admin = AdminClient(dict(self._common))

    @classmethod
    def from_config(cls, cfg: Any) -> KafkaTransport:
        """Build from ``eventward._internal.config.KafkaConfig``."""
        return cls(
            cfg.bootstrap_servers, security_protocol=cfg.security_protocol, ssl_ca=cfg.ssl_ca,
            ssl_cert=cfg.ssl_cert, ssl_key=cfg.ssl_key, extra=cfg.extra,
        )

    @staticmethod
    def _common_config(
        bootstrap: str,
        protocol: str,
        ca: str | Path | None,
        cert: str | Path | None,
        key: str | Path | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "security.protocol": protocol, "log_level": 3}
        if (cert is None) != (key is None):
            raise ConfigError("Kafka client TLS needs both a certificate and its key")
        if ca is not None:
            conf["ssl.ca.location"] = str(ca)
        if cert is not None and key is not None:
            read_secret(Path(key))  # refuse a private key others can read
            conf["ssl.certificate.location"], conf["ssl.key.location"] = str(cert), str(key)
        conf.update(extra or {})
        return conf

    def _consumer(self, group: str) -> Consumer:
        return Consumer(
            {
                **self._common,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "fetch.max.bytes": max(self.max_message_bytes * 2, 52_428_800),
            }
        )

    def topic(self, stream: str) -> str:
        return self.topic_prefix + check_stream_name(stream)

    def _retry(self, what: str, attempt: Callable[[], T]) -> T:
        if self._closed:
            raise TransportError(f"{what}: the Kafka transport is closed")
        return retry_sync(what, lambda: _kafka_call(what, attempt), self.backoff)

    # --- streams --------------------------------------------------------------------------------
    def create_stream(self, stream: str, *, replicas: int | None = None) -> None:
        """Idempotent: one partition (see the module docstring), ``replicas`` replication factor."""
        topic = self.topic(stream)
        r = self.replicas if replicas is None else replicas
        if r < 1:
            raise InputError("replicas must be at least 1")
        if not self.create_topics:  # e.g. the mock cluster: a metadata request auto-creates it
            self._retry(f"create stream {stream}", lambda: self._producer.list_topics(topic, self.timeout_s))
            self._known_topics.add(topic)
            return
        new = NewTopic(
            topic, num_partitions=1, replication_factor=r,
            config={"retention.ms": "-1", "retention.bytes": "-1", "min.insync.replicas": str(min(2, r))},
        )

        def attempt() -> None:
            fut = self._admin.create_topics([new], request_timeout=self.timeout_s)[topic]
            try:
                fut.result(self.timeout_s)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                parts = self._admin.list_topics(topic, self.timeout_s).topics[topic].partitions
                if len(parts) != 1:
                    raise ConflictError(
                        f"topic for stream {stream} exists with {len(parts)} partitions"
                    ) from None

        self._retry(f"create stream {stream}", attempt)
        self._known_topics.add(topic)

    def streams(self) -> list[str]:
        """Topics under the prefix whose names are stream names (never Kafka's internal ``__*``)."""
        md = self._retry("list streams", lambda: self._admin.list_topics(timeout=self.timeout_s))
        n = len(self.topic_prefix)
        return sorted(t[n:] for t in md.topics if t.startswith(self.topic_prefix) and _is_stream(t[n:]))

    def has_stream(self, stream: str) -> bool:
        """Does ``stream``'s topic exist (metadata filtered by the broker to what we may Describe)?"""
        return self._topic_if_exists(stream) is not None

    def _require_topic(self, stream: str) -> str:
        topic = self._topic_if_exists(stream)
        if topic is None:
            raise NotFoundError(f"stream {stream!r} does not exist")
        return topic

    def _topic_if_exists(self, stream: str) -> str | None:
        topic = self.topic(stream)
        if topic not in self._known_topics:
            md = self._retry(f"find stream {stream}", lambda: self._admin.list_topics(timeout=self.timeout_s))
            if topic not in md.topics:
                return None
            self._known_topics.add(topic)
        return topic

    # --- append ---------------------------------------------------------------------------------
    def append(self, stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        payload = framing.encode(batch_id, events, seal)
        if len(payload) > self.max_message_bytes:
            raise OversizeError(
                f"batch for {stream} is {len(payload)} bytes; this Kafka transport accepts "
                f"{self.max_message_bytes} per batch (flush smaller batches)",
                size=len(payload), limit=self.max_message_bytes,
            )
        topic = self._require_topic(stream)
        with self._lock:
            known = self._index(stream).recent.get(batch_id)
        if known is not None:  # a retry of a batch this instance has already seen stored
            return known
        kafka_offset = self._retry(f"append to {stream}", lambda: self._produce(topic, batch_id, payload))
        with self._lock:
            index = self._index(stream)
            if index.scanned < kafka_offset:
                self._scan(stream, kafka_offset)
            if index.scanned == kafka_offset:  # everything before it is indexed; index it unread
                return index.add(kafka_offset, batch_id, len(events))
            first = index.first_of(kafka_offset)
            return first if first is not None else index.recent[batch_id]

    def _produce(self, topic: str, batch_id: str, payload: bytes) -> int:
        done = threading.Event()
        result: list[Message] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            result.append(msg)
            done.set()

        try:
            self._producer.produce(
                topic, value=payload, key=batch_id.encode(), partition=PARTITION, on_delivery=delivered
            )
        except BufferError:
            self._producer.poll(0.1)
            raise Retry("producer queue full") from None
        deadline = time.monotonic() + self.timeout_s + 5
        while not done.is_set():
            if time.monotonic() > deadline:
                raise Retry("no delivery report")
            self._producer.poll(0.05)
        msg = result[0]
        if msg.error() is not None:
            raise KafkaException(msg.error())
        offset = msg.offset()
        if offset is None or offset < 0:
            raise TransportError(f"delivery report for {topic} carries no offset")
        return int(offset)

    # --- read -----------------------------------------------------------------------------------
    def read(self, stream: str, offset: int, max_records: int) -> list[Record]:
        check_stream_name(stream)
        if max_records <= 0:
            return []
        offset = max(0, offset)
        with self._lock:
            topic = self._require_topic(stream)
            index = self._index(stream)
            high = self._high_watermark(topic)
            start = index.kafka_of(offset)
            out: list[Record] = []
            for k, batch in self._messages(stream, topic, start, high):
                first = index.first_of(k) if k < index.scanned else None
                if k >= index.scanned:
                    if index.recent.get(batch.batch_id) is not None:
                        index.scanned = k + 1  # a retry copy: no offsets
                        continue
                    first = index.add(k, batch.batch_id, len(batch.events))
                if first is None or first + len(batch.events) <= offset:
                    continue
                skip = max(0, offset - first)
                out.extend(batch.records(stream, first, skip, max_records - len(out)))
                if len(out) >= max_records:
                    break
            return out

    def _messages(self, stream: str, topic: str, start: int, stop: int) -> Any:
        """Decoded batches at Kafka offsets [start, stop), in order (a generator)."""
        k = start
        while k < stop:
            if self._reader_at != (topic, k):
                low, _ = self._watermarks(topic)
                if low > k:  # the log was trimmed: earlier batches' event counts are gone
                    raise TransportError(
                        f"stream {stream}: Kafka no longer holds offsets before {low} (retention); "
                        "event offsets cannot be derived (eventward topics need unlimited retention)"
                    )
                tp = TopicPartition(topic, PARTITION, k)
                self._retry(f"read from {stream}", lambda tp=tp: self._reader.assign([tp]))
                self._reader_at = (topic, k)
            want = min(stop - k, 500)
            msgs = self._retry(f"read from {stream}", lambda w=want: self._fetch(w))
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err) if not err.retriable() else TransportUnavailable(
                        f"read from {stream}: {err.name()}"
                    )
                if m.offset() != k:
                    raise TransportError(f"stream {stream}: expected Kafka offset {k}, got {m.offset()}")
                k += 1
                self._reader_at = None  # until this list is used up, the consumer is ahead of k
                yield m.offset(), framing.decode(m.value() or b"", f"stream {stream} Kafka offset {k - 1}")
            self._reader_at = (topic, k)

    def _fetch(self, want: int) -> list[Message]:
        msgs = self._reader.consume(want, timeout=self.timeout_s)
        if not msgs:
            raise Retry("no messages within the timeout")
        return msgs

    def _watermarks(self, topic: str) -> tuple[int, int]:
        tp = TopicPartition(topic, PARTITION)
        low, high = self._retry(
            f"read the end of {topic}", lambda: self._reader.get_watermark_offsets(tp, timeout=self.timeout_s)
        )
        return int(low), int(high)

    def _high_watermark(self, topic: str) -> int:
        return self._watermarks(topic)[1]

    def _scan(self, stream: str, upto: int) -> None:
        """Index every message before Kafka offset ``upto``."""
        index = self._index(stream)
        for k, batch in self._messages(stream, self.topic(stream), index.scanned, upto):
            if index.recent.get(batch.batch_id) is not None:
                index.scanned = k + 1
            else:
                index.add(k, batch.batch_id, len(batch.events))

    def _index(self, stream: str) -> _Index:
        return self._indexes.setdefault(stream, _Index())

    def end_offset(self, stream: str) -> int:
        check_stream_name(stream)
        with self._lock:
            topic = self._topic_if_exists(stream)
            if topic is None:
                return 0
            self._scan(stream, self._high_watermark(topic))
            return self._index(stream).end

    # --- consumer groups ------------------------------------------------------------------------
    def commit(self, group: str, stream: str, offset: int) -> None:
        _check_group(group)
        if not isinstance(offset, int) or offset < 0:
            raise InputError("a committed offset must be a non-negative integer")
        with self._lock:
            topic = self._require_topic(stream)
            index = self._index(stream)
            if offset > index.end:
                self._scan(stream, self._high_watermark(topic))
            tp = TopicPartition(topic, PARTITION, index.kafka_of(offset), metadata=f"{_META}{offset}")
            consumer = self._group(group)
        self._retry(
            f"commit offset for {stream}",
            lambda: _check_commit(consumer.commit(offsets=[tp], asynchronous=False)),
        )

    def committed(self, group: str, stream: str) -> int | None:
        _check_group(group)
        with self._lock:
            topic = self._require_topic(stream)
            consumer = self._group(group)
        tps = self._retry(
            f"read committed offset for {stream}",
            lambda: consumer.committed([TopicPartition(topic, PARTITION)], timeout=self.timeout_s),
        )
        tp = tps[0]
        if tp.offset < 0:
            return None
        meta = tp.metadata or ""
        if meta.startswith(_META) and meta[len(_META) :].isdigit():
            return int(meta[len(_META) :])
        with self._lock:  # committed by a plain Kafka consumer: translate its Kafka offset
            self._scan(stream, max(tp.offset, self._index(stream).scanned))
            return self._index(stream).offset_of(tp.offset)

    def _group(self, group: str) -> Consumer:
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups[group] = self._consumer(group)
        return consumer

    # --- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._producer.flush(self.timeout_s)
        for c in (self._reader, *self._groups.values()):
            c.close()

    def __enter__(self) -> KafkaTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KafkaTransport(topic_prefix={self.topic_prefix!r}, replicas={self.replicas})"


def _kafka_call(what: str, attempt: Callable[[], T]) -> T:
    """Map librdkafka errors: retriable ones to Retry, the rest to typed eventward errors."""
    try:
        return attempt()
    except (EventwardError, Retry):
        raise
    except KafkaException as e:
        err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
        if err is None:
            raise TransportError(f"{what}: Kafka error") from None
        code = err.code()
        if code in _DENIED:
            raise AccessDenied(f"{what}: the Kafka cluster refused this principal ({err.name()})") from None
        if code in _MISSING:
            raise NotFoundError(f"{what}: no such topic") from None
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            raise OversizeError(f"{what}: the batch is larger than the broker accepts") from None
        if err.retriable() or code in _TRANSIENT:
            raise Retry(err.name()) from None
        raise TransportError(f"{what}: Kafka error {err.name()}") from None
    except RuntimeError:
        raise TransportError(f"{what}: the Kafka client is closed") from None


def _is_stream(name: str) -> bool:
    try:
        check_stream_name(name)
    except InputError:
        return False
    return True


def _check_commit(result: Any) -> None:
    for tp in result or []:
        if tp.error is not None:
            raise KafkaException(tp.error)


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not 0 < len(group) <= 200:
        raise InputError("consumer group name must be 1..200 characters")
