"""Partitioned topics: one topic, N streams, so producers and consumers scale across processes.

Partition 0 of topic ``T`` is the stream ``T`` itself and partition ``p >= 1`` is ``T.p<p>``,
so a topic of one partition is exactly the layout of an unpartitioned topic (no migration),
and raising the count keeps the data already written in partition 0. The count is declared
in policy.yaml (``resources: {Topic: {T: {partitions: N}}}``), because the policy is what the
broker compilers read: authorization stays per topic and every partition stream shares its
topic's grants (``policy.broker.topic_access``). A policy naming ``T.p<k>`` as a topic of its
own while ``T`` has more than ``k`` partitions is refused, so the names never collide.

An event goes to the partition of a stable hash of its key: the data subject's pseudonym when
the schema names a subject (one subject's events stay ordered in one partition), else the
event id. Each partition gets its own sealed batches and sequence numbers (the seal binds the
partition stream), so consumers check order and gaps per (producer instance, partition).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from eventward.errors import InputError

MAX_PARTITIONS = 64
_PARTITION = re.compile(r"(.+)\.p([1-9][0-9]{0,2})")


def partition_stream(topic: str, partition: int) -> str:
    """The stream holding ``partition`` of ``topic``: the topic itself for 0, else ``<topic>.p<n>``."""
    return topic if partition == 0 else f"{topic}.p{partition}"


def partition_streams(topic: str, partitions: int) -> list[str]:
    """Every stream of a topic of ``partitions`` partitions, partition 0 (the topic) first."""
    return [partition_stream(topic, p) for p in range(max(1, partitions))]


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key``: the same on every host and Python version (SHA-256, not ``hash``)."""
    if partitions <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") % partitions


def member_partitions(member: int, members: int, partitions: int) -> list[int]:
    """The partitions member ``member`` of ``members`` reads (static assignment: p mod members)."""
    if not 1 <= members <= partitions or not 0 <= member < members:
        raise InputError(
            f"partition_of=({member}, {members}) needs 0 <= member < members <= partitions ({partitions})"
        )
    return [p for p in range(partitions) if p % members == member]


def check_partitions(partitions: Sequence[int], count: int) -> list[int]:
    """Requested partitions, checked against the topic's count, without duplicates, in order."""
    out = list(dict.fromkeys(partitions))
    if not out or any(type(p) is not int or not 0 <= p < count for p in out):
        raise InputError(f"partitions must be numbers 0..{count - 1} of this topic")
    return out


def split_stream(stream: str) -> tuple[str, int] | None:
    """(topic, partition) if ``stream`` is named like a partition stream (``T.p<n>``), else None."""
    m = _PARTITION.fullmatch(stream)
    return (m[1], int(m[2])) if m else None


def topic_of(stream: str, partitions: Callable[[str], int]) -> str:
    """The topic a stream belongs to, given each topic's partition count."""
    parts = split_stream(stream)
    if parts is not None and parts[1] < partitions(parts[0]):
        return parts[0]
    return stream
