"""Property test for the NATS transport's record decoding (no server needed): a stored message
is a header block plus one framed sealed batch, and anyone who may publish to the stream's
subject can store arbitrary headers and bytes there. Decoding yields the batch or a
TransportError naming the stream and sequence, never another exception."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.log import framing
from eventward._internal.log import nats as nats_log
from eventward.errors import EventwardError, TransportError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

FRAME = framing.encode("b-1", [b'{"n":1}', b'{"n":2}'], b"seal-bytes")
header_values = st.text(max_size=12) | st.sampled_from(["0", "2", "-1", "1_0", " 7 ", "9" * 4400, "0x2", "2.0"])


def _transport() -> nats_log.NatsTransport:
    """A transport object with just the state ``_decode`` uses (no connection)."""
    t = nats_log.NatsTransport.__new__(nats_log.NatsTransport)
    t._indexes = {}
    return t


@SETTINGS
@given(
    st.dictionaries(st.sampled_from([nats_log._H_OFFSET, nats_log._H_COUNT, "X"]), header_values, max_size=3),
    st.sampled_from([FRAME, b"", FRAME[:-1], FRAME + b"x"]) | st.binary(max_size=80),
    st.integers(1, 2**63),
)
def test_property_nats_stored_message_decoding(headers: dict[str, str], data: bytes, seq: int) -> None:
    t = _transport()
    try:
        stored = t._decode("orders", seq, headers, data)
    except TransportError as e:
        assert f"sequence {seq}" in e.message
        return
    except EventwardError as e:
        raise AssertionError(f"_decode raised {type(e).__name__}") from e
    assert stored.batch.events and int(headers[nats_log._H_COUNT]) == len(stored.batch.events)


@SETTINGS
@given(st.binary(max_size=300))
def test_property_nats_header_block(raw: bytes) -> None:
    headers = nats_log._parse_headers(b"NATS/1.0\r\n" + raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
