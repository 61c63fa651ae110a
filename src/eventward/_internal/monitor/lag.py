"""Consumer lag per group (events appended but not yet committed) on the embedded log and NATS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventward._internal.monitor import metrics
from eventward.errors import ConfigError


@dataclass(frozen=True)
class GroupLag:
    group: str
    stream: str
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def _offsets(transport: Any) -> list[tuple[str, str, int]]:
    if hasattr(transport, "groups"):  # embedded: (group, stream, offset)
        return [(g, s, o) for g, s, o in transport.groups()]
    if hasattr(transport, "group_offsets"):  # NATS: the offsets KV bucket
        return [(o.group, o.stream, o.committed) for o in transport.group_offsets()]
    raise ConfigError("this transport cannot list consumer groups (embedded and NATS can; on Kafka use its tools)")


def group_lags(transport: Any) -> list[GroupLag]:
    """Every group's lag per stream, and the ``eventward_consumer_lag`` gauge set from it."""
    ends: dict[str, int] = {}
    out: list[GroupLag] = []
    for group, stream, committed in _offsets(transport):
        if stream not in ends:
            ends[stream] = transport.end_offset(stream)
        g = GroupLag(group, stream, committed, ends[stream])
        metrics.consumer_lag.child(stream, group).set(g.lag)
        out.append(g)
    return out
