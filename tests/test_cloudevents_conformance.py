"""CloudEvents 1.0 JSON format conformance of ``eventward._internal.envelope``, counted case by case.

The cases are the spec's JSON-format examples (section 3: single events with JSON, text and binary
data), written here as test data, plus one valid and one invalid case per rule
of the core spec, the JSON format and the distributed-tracing extension (W3C Trace Context). The
CloudEvents Python SDK's sdist ships no test fixtures (checked for cloudevents==2.2.0), so the
SDK is used instead as an independent parser: every spec-valid case must parse there too.

Each verdict is agree, refused by design (valid per the spec, refused on purpose; listed with the
reason in docs/CONFORMANCE.md) or disagree; the counts are printed and disagree must be 0.
Batches (JSON format section 4) and the HTTP binding are exercised at the gateway, by the SDK
(tests/gateway/test_gateway_cloudevents.py).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat

from eventward._internal import envelope
from eventward.errors import EnvelopeError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BASE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "A234-1234-1234",
    "source": "/mycontext",
    "type": "com.example.someevent",
}

# --- the spec's JSON-format examples (section 3.1 and 4), as data --------------------------------
SPEC_TEXT = {
    "specversion": "1.0",
    "type": "com.example.someevent",
    "source": "/mycontext",
    "subject": None,
    "id": "C234-1234-1234",
    "time": "2018-04-05T17:31:00Z",
    "comexampleextension1": "value",
    "comexampleothervalue": 5,
    "datacontenttype": "application/xml",
    "data": '<much wow="xml"/>',
}
SPEC_BINARY = {
    **{k: v for k, v in SPEC_TEXT.items() if k not in ("data", "subject")},
    "datacontenttype": "application/vnd.apache.thrift.binary",
    "data_base64": base64.b64encode(b"\x00\x01thrift\xff").decode(),
}
SPEC_JSON = {**{k: v for k, v in SPEC_TEXT.items() if k != "data"}, "datacontenttype": "application/json",
             "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True}}
SPEC_CORE = {  # the core spec's example event with every optional attribute
    "specversion": "1.0",
    "type": "com.github.pull_request.opened",
    "source": "https://github.com/cloudevents/spec/pull",
    "subject": "123",
    "id": "A234-1234-1234",
    "time": "2018-04-05T17:31:00Z",
    "comexampleextension1": "value",
    "comexampleothervalue": 5,
    "datacontenttype": "text/xml",
    "dataschema": "https://example.com/schemas/pull-request.xsd",
    "data": '<much wow="xml"/>',
}


def ev(**changes: Any) -> dict[str, Any]:
    """BASE with attributes changed; a value of ... removes the attribute."""
    out = {**BASE, **changes}
    return {k: v for k, v in out.items() if v is not ...}


VALID: dict[str, Any] = {
    "spec-3.1-text-data": SPEC_TEXT,
    "spec-3.1-binary-data": SPEC_BINARY,
    "spec-3.1-json-data": SPEC_JSON,
    "spec-core-example": SPEC_CORE,
    "minimal": ev(),
    "null-optional-attribute-is-unset": ev(subject=None, dataschema=None, time=None, datacontenttype=None),
    "null-extension-is-unset": ev(comexampleextension=None),
    "null-data-is-no-data": ev(data=None),
    "null-data-with-data-base64": ev(data=None, data_base64="AAEC"),
    "extension-string-int-bool": ev(strext="v", intext=-(2**31), boolext=True, maxint=2**31 - 1),
    "extension-empty-string": ev(emptyext=""),
    "extension-20-chars": ev(**{"a" * 20: "x"}),
    "time-nanoseconds-and-offset": ev(time="2018-04-05T17:31:00.123456789+05:30"),
    "time-leap-day": ev(time="2024-02-29T00:00:00Z"),
    "source-urn": ev(source="urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    "source-absolute-uri": ev(source="https://example.com/a/b?c=d#e"),
    "source-percent-escape": ev(source="/path%20with%20escapes"),
    "dataschema-absolute": ev(dataschema="https://example.com/schema/v1.json"),
    "datacontenttype-with-parameters": ev(datacontenttype="application/json; charset=utf-8", data={"a": 1}),
    "datacontenttype-json-suffix": ev(datacontenttype="application/vnd.example+json", data=[1, 2]),
    "json-data-scalars": ev(data=42),
    "json-data-string": ev(data="text"),
    "data-absent-contenttype-json": ev(datacontenttype="application/json"),
    "traceparent": ev(traceparent=TRACEPARENT),
    "traceparent-future-version": ev(traceparent="01" + TRACEPARENT[2:] + "-extra"),
    "tracestate": ev(traceparent=TRACEPARENT, tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    "tracestate-multitenant-key": ev(tracestate="fw529a3039@dt=aGVsbG8"),
}

INVALID: dict[str, Any] = {
    "missing-id": ev(id=...),
    "missing-source": ev(source=...),
    "missing-type": ev(type=...),
    "missing-specversion": ev(specversion=...),
    "null-required-attribute": ev(id=None),
    "specversion-0.3": ev(specversion="0.3"),
    "specversion-number": ev(specversion=1.0),
    "empty-id": ev(id=""),
    "empty-type": ev(type=""),
    "id-number": ev(id=1234),
    "empty-subject": ev(subject=""),
    "source-with-space": ev(source="/my context"),
    "source-bad-percent": ev(source="/a%zz"),
    "source-non-ascii": ev(source="/caf\u00e9"),
    "dataschema-relative": ev(dataschema="/schemas/v1"),
    "dataschema-empty": ev(dataschema=""),
    "time-no-offset": ev(time="2018-04-05T17:31:00"),
    "time-impossible-date": ev(time="2021-02-29T00:00:00Z"),
    "time-not-a-time": ev(time="yesterday"),
    "datacontenttype-not-media-type": ev(datacontenttype="json"),
    "datacontenttype-empty": ev(datacontenttype=""),
    "data-and-data-base64": ev(data={"a": 1}, data_base64="AAEC"),
    "data-base64-not-base64": ev(data_base64="not base64!"),
    "data-base64-number": ev(data_base64=5),
    "extension-uppercase-name": ev(Comexample="x"),
    "extension-dash-name": ev(**{"com-example": "x"}),
    "extension-object-value": ev(objext={"a": 1}),
    "extension-array-value": ev(arrext=[1]),
    "extension-float-value": ev(floatext=1.5),
    "extension-int-above-int32": ev(bigext=2**31),
    "traceparent-malformed": ev(traceparent="00-abc"),
    "traceparent-version-ff": ev(traceparent="ff" + TRACEPARENT[2:]),
    "traceparent-zero-trace-id": ev(traceparent=f"00-{'0' * 32}-00f067aa0ba902b7-01"),
    "traceparent-uppercase-hex": ev(traceparent=TRACEPARENT.upper()),
    "traceparent-v00-with-suffix": ev(traceparent=TRACEPARENT + "-extra"),
    "traceparent-number": ev(traceparent=5),
    "traceparent-trailing-newline": ev(traceparent=TRACEPARENT + "\n"),
    "extension-name-trailing-newline": ev(**{"comexample\n": "x"}),
    "time-trailing-newline": ev(time="2018-04-05T17:31:00Z\n"),
    "source-trailing-newline": ev(source="/mycontext\n"),
    "tracestate-no-equals": ev(tracestate="rojo"),
    "tracestate-uppercase-key": ev(tracestate="Rojo=1"),
    "tracestate-repeated-key": ev(tracestate="a=1,a=2"),
    "event-not-an-object": [BASE],
}

# Valid per the spec, refused on purpose (each is listed with its reason in docs/CONFORMANCE.md).
BY_DESIGN: dict[str, Any] = {
    "extension-name-over-20-chars": ev(**{"a" * 21: "x"}),
    "attribute-over-4096-chars": ev(subject="s" * 4097),
    "non-json-contenttype-with-object-data": ev(datacontenttype="text/plain", data={"a": 1}),
    "time-leap-second": ev(time="2016-12-31T23:59:60Z"),
    "time-lowercase-t-and-z": ev(time="2018-04-05t17:31:00z"),
}


def verdict(doc: Any) -> str:
    try:
        envelope.decode(orjson.dumps(doc))
    except EnvelopeError:
        return "refused"
    return "accepted"


def test_cloudevents_json_format_conformance(capsys: pytest.CaptureFixture[str]) -> None:
    agree, by_design, disagree = [], [], []
    for name, doc in VALID.items():
        (agree if verdict(doc) == "accepted" else disagree).append(name)
    for name, doc in INVALID.items():
        (agree if verdict(doc) == "refused" else disagree).append(name)
    for name, doc in BY_DESIGN.items():
        (by_design if verdict(doc) == "refused" else disagree).append(name)
    with capsys.disabled():
        print(
            f"\nCloudEvents JSON format: agree {len(agree)}, refused by design {len(by_design)}, "
            f"disagree {len(disagree)}"
        )
    assert disagree == []
    assert len(agree) == len(VALID) + len(INVALID)
    documented = (Path(__file__).resolve().parents[1] / "docs" / "CONFORMANCE.md").read_text()
    for name in BY_DESIGN:
        assert f"`{name}`" in documented, f"{name} is refused by design but not listed in docs/CONFORMANCE.md"


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_valid_case_parses_in_the_cloudevents_sdk_too(name: str) -> None:
    """An independent parser agrees the case is a valid CloudEvent (so the cases are not ours alone)
    and what eventward keeps equals what the SDK reads. The SDK (2.2.0) refuses null attributes
    instead of treating them as unset, so it is handed the event with its nulls removed."""
    raw = orjson.dumps(VALID[name])
    sdk = JSONFormat().read(None, orjson.dumps(envelope.unset_nulls(VALID[name])))
    ours = envelope.decode(raw)
    sdk_attrs = {k: v for k, v in sdk.get_attributes().items() if v is not None and k != "time"}
    assert {k: v for k, v in ours.items() if k not in ("data", "data_base64", "time")} == sdk_attrs
    if "time" in ours:
        assert envelope.parse_time(ours["time"]) == pytest.approx(sdk.get_time().timestamp(), abs=1e-6)


def test_null_attributes_are_unset_not_refused() -> None:
    got = envelope.decode(orjson.dumps(ev(subject=None, comexampleextension=None, data={"a": 1})))
    assert "subject" not in got and "comexampleextension" not in got and got["data"] == {"a": 1}


def test_a_null_required_attribute_is_missing() -> None:
    with pytest.raises(EnvelopeError, match="required attribute 'source' is missing"):
        envelope.decode(orjson.dumps(ev(source=None)))


def test_attack_malformed_traceparent_is_refused_by_name_without_echoing_it() -> None:
    """A tracer trusts traceparent's shape; a crafted one (header injection, log forging) stops here."""
    crafted = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Injected: 1"
    with pytest.raises(EnvelopeError) as e:
        envelope.decode(orjson.dumps(ev(traceparent=crafted)))
    assert "'traceparent'" in e.value.message and "Injected" not in e.value.message
