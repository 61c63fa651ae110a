"""Stream names every transport accepts (NATS subjects and Kafka topics included)."""

from __future__ import annotations

import re

from eventward.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def check_stream_name(stream: str) -> str:
    if not isinstance(stream, str) or not _NAME.match(stream):
        raise InputError(
            f"invalid stream name {str(stream)[:60]!r} (letters, digits, '_', '.', '-'; max 200)"
        )
    return stream
