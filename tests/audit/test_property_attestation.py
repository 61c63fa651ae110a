"""Property tests for the documents the attestation code reads from outside: witness requests,
RFC 3161 tokens and backup manifests. Each is accepted or refused with eventward's typed error,
never another exception; a mutated witness request never moves the witness's state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.timestamp import verify_timestamp
from eventward._internal.audit.tree import ConsistencyProof
from eventward._internal.audit.witness import Witness, parse_request, request_document
from eventward._internal.backup import _load_manifest
from eventward._internal.home import Home
from eventward.errors import EventwardError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "80"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# a syntactically valid self-signed certificate is not needed: a token must fail before the key is used
CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("attest")
    home = Home(root / "home")
    with AuditLog.open(home) as log:
        log.append_many([{"action": "a.b", "principal": "p", "resource": "r"} for _ in range(5)])
        first = log.checkpoint()
        log.append_many([{"action": "a.b", "principal": "p", "resource": "r"} for _ in range(4)])
        second = log.checkpoint()
        proof = log.consistency(first.size, second.size)
        vkey = log.verifier.vkey()
    return vkey, first.text, request_document(second.text, proof), first.size


@SETTINGS
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_request_random_input_fails_typed(data):
    try:  # anything but a typed refusal (a TypeError, a KeyError) fails the test
        checkpoint, proof = parse_request(data)
    except EventwardError:
        return
    assert isinstance(checkpoint, str) and (proof is None or isinstance(proof, ConsistencyProof))


def _mutate(doc: dict, path: list, value: object) -> dict:
    out = orjson.loads(orjson.dumps(doc))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@settings(max_examples=min(EXAMPLES, 25), deadline=None, suppress_health_check=list(HealthCheck))  # fsyncs
@given(where=st.sampled_from([["checkpoint"], ["proof"], ["proof", "old_size"], ["proof", "new_size"],
                              ["proof", "hashes"]]),
       value=json_values)
def test_mutated_witness_request_never_moves_the_state(world, where, value):
    vkey, first, request, size = world
    doc = _mutate(orjson.loads(request), where, value)
    with tempfile.TemporaryDirectory() as tmp:
        w = Witness.init(Path(tmp) / "w", "witness.example/p", vkey)
        w.cosign(first, None)
        try:
            w.cosign(*parse_request(orjson.dumps(doc)))
        except EventwardError:
            assert w.last().size == size
        else:  # only a "mutation" that left the request as it was may be cosigned
            assert doc == orjson.loads(request)


@SETTINGS
@given(token=st.binary(max_size=400))
def test_timestamp_token_random_bytes_fail_typed(token):
    with pytest.raises(EventwardError):
        verify_timestamp(token, b"data", CERT)


@SETTINGS
@given(doc=json_values | st.dictionaries(
    st.sampled_from(["format", "deployment", "created", "files", "key_state", "kek_versions", "audit", "mac"]),
    json_values, max_size=8))
def test_backup_manifest_random_documents_fail_typed(tmp_path_factory, doc):
    d = tmp_path_factory.mktemp("bk")
    (d / "manifest.json").write_bytes(orjson.dumps(doc))
    with pytest.raises(EventwardError):
        _load_manifest(d)
