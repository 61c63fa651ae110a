"""Property tests for the audit parsers a verifier runs on documents it did not write: stored
record bytes, C2SP checkpoints, inclusion proofs and erasure certificates. Each returns its
value or raises AuditIntegrityError (a certificate's claims a ValidationError), never another
exception, and a modified document never verifies.

Inputs are random bytes/text and mutations of real documents from a deployment: JSON fields
replaced by arbitrary values (re-encoded canonically, so they get past the byte checks),
characters flipped, lines dropped or duplicated.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.audit import records
from eventward._internal.audit.certificate import Certificate, verify_certificate
from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.signing import AuditVerifier
from eventward._internal.audit.tree import ConsistencyProof, InclusionProof
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AuditIntegrityError, ConfigError, EventwardError, ValidationError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "120"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


class Docs:
    """One erasure certificate from a real deployment, and the parts it is made of."""

    def __init__(self, root: Path) -> None:
        dep = Deployment.init(Home(root / "home"), admin="admin")
        try:
            self.cert = dep.forget("cust-prop-1", principal="admin", reason="gdpr-art17").certificate
            self.vkey = dep.audit.verifier.vkey()
        finally:
            dep.close()
        self.text = self.cert.to_json()
        self.doc = orjson.loads(self.text)
        self.record = self.cert.record
        self.index = self.cert.index
        self.checkpoint = self.cert.checkpoint


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    yield Docs(tmp_path_factory.mktemp("audit-prop"))


def integrity_only(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except (AuditIntegrityError, ValidationError):
        return None
    except EventwardError as e:
        raise AssertionError(f"{fn.__name__} raised {type(e).__name__}") from e


def _set_path(doc: Any, path: list[Any], value: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced (or the key deleted if value is ...)."""
    if not path:
        return value
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    key = path[0]
    if len(path) == 1 and value is ...:
        del out[key]
    else:
        out[key] = _set_path(out[key], path[1:], value)
    return out


def _paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, [*prefix, k])
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, [*prefix, i])
    return out


# --- stored audit records --------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300))
def test_property_audit_record_random_bytes(body: bytes) -> None:
    for rec in (integrity_only(records.decode, body), integrity_only(records.decode, body, 3)):
        assert rec is None or type(rec.index) is int  # refused typed, or a record with the types readers rely on


@SETTINGS
@given(data=st.data())
def test_property_audit_record_field_mutations(docs: Docs, data: st.DataObject) -> None:
    """Any field of a real record retyped, re-encoded canonically: typed refusal or the exact shape."""
    obj = orjson.loads(docs.record)
    path = data.draw(st.sampled_from(_paths(obj)))
    body = orjson.dumps(_set_path(obj, path, data.draw(values | st.just(...))), option=orjson.OPT_SORT_KEYS)
    rec = integrity_only(records.decode, body, docs.index)
    if rec is not None:  # accepted: the types every reader relies on
        assert type(rec.index) is int and rec.index == docs.index
        assert all(type(getattr(rec, f)) is str for f in ("time", "principal", "action", "resource", "outcome"))
        assert all(v is None or type(v) in (str, int, float, bool) for v in rec.meta.values())


def test_attack_audit_record_wrong_types_in_canonical_form(docs: Docs) -> None:
    """A DB writer's canonical record with a non-string principal used to decode, and crash
    ``audit tail``'s table; it is an integrity failure naming the index."""
    obj = orjson.loads(docs.record)
    for field, bad in (("principal", 5), ("time", None), ("meta", {"k": [1]}), ("index", True), ("reason", {})):
        body = orjson.dumps({**obj, field: bad}, option=orjson.OPT_SORT_KEYS)
        with pytest.raises(AuditIntegrityError) as ei:
            records.decode(body, obj["index"] if field != "index" else None)
        assert ei.value.index == (obj["index"] if field != "index" else None)


# --- checkpoints ----------------------------------------------------------------------------


@SETTINGS
@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_property_audit_checkpoint_random_text(docs: Docs, text: str) -> None:
    integrity_only(verify_checkpoint, text, docs.vkey)


@SETTINGS
@given(st.integers(0, 4000), st.text(max_size=8), st.integers(0, 6))
def test_property_audit_checkpoint_mutations(docs: Docs, at: int, chunk: str, cut: int) -> None:
    cp = docs.checkpoint
    at %= len(cp) + 1
    for bad in (cp[:at] + chunk + cp[at + cut :], cp[:at], "\n".join(reversed(cp.split("\n")))):
        if bad != cp:
            assert integrity_only(verify_checkpoint, bad, docs.vkey) is None, "a modified checkpoint verified"


# --- proofs and certificates ---------------------------------------------------------------


@SETTINGS
@given(values)
def test_property_audit_proof_random_documents(doc: Any) -> None:
    assert integrity_only(InclusionProof.from_dict, doc) is None or isinstance(doc, dict)
    assert integrity_only(ConsistencyProof.from_dict, doc) is None or isinstance(doc, dict)


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_property_audit_certificate_random_input(docs: Docs, raw: bytes | str) -> None:
    assert integrity_only(Certificate.from_json, raw) is None  # random input is never a certificate
    if isinstance(raw, str):
        assert integrity_only(verify_certificate, raw, docs.vkey) is None


@SETTINGS
@given(data=st.data())
def test_property_audit_certificate_field_mutations(docs: Docs, data: st.DataObject) -> None:
    """Any field at any depth replaced, deleted or retyped: never verifies, always typed."""
    path = data.draw(st.sampled_from(_paths(docs.doc)))
    mutated = _set_path(docs.doc, path, data.draw(values | st.just(...)))
    text = orjson.dumps(mutated).decode()
    check = integrity_only(verify_certificate, text, docs.vkey)
    assert check is None or mutated == docs.doc, f"a certificate modified at {path} verified"


def test_property_audit_certificate_original_verifies(docs: Docs) -> None:
    """The unmodified certificate verifies, so the refusals above are about the mutations."""
    check = verify_certificate(docs.text, docs.vkey)
    assert check.index == docs.index and check.subject_hash == docs.cert.subject_hash


# --- what callers hand the audit log ---------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.builds(  # lone surrogates too
    lambda a, c, b: a + c + b, st.text(max_size=8), st.characters(categories=["Cs"]), st.text(max_size=8)
)


@SETTINGS
@given(any_text, any_text, any_text, any_text, st.dictionaries(st.text(max_size=10), scalars | any_text, max_size=4))
def test_property_audit_accepted_entries_are_storable(
    principal: str, resource: str, reason: str, action: str, meta: dict[str, Any]
) -> None:
    """Whatever make_entry accepts, encode() stores: a record refused only at flush would wedge
    the whole buffer (every later flush retries it) and take the audit log down."""
    for kw in (
        {"principal": principal, "resource": "r"},
        {"principal": "p", "resource": resource},
        {"principal": "p", "resource": "r", "reason": reason},
        {"principal": "p", "resource": "r", "meta": meta},
    ):
        entry = integrity_only(records.make_entry, "key.hold", **kw)
        if entry is not None:
            assert records.encode(1, entry)
    entry = integrity_only(records.make_entry, action, principal="p", resource="r")
    if entry is not None:
        assert records.encode(1, entry)


def test_attack_audit_surrogate_is_refused_at_the_call(tmp_path: Path) -> None:
    """A lone surrogate (undecodable bytes from argv or a header) used to be buffered and then
    fail every flush with a TypeError; it is a ValidationError at the call and the log goes on."""
    from eventward._internal.audit.log import AuditLog

    home = Home(tmp_path / "home").ensure()
    with AuditLog.open(home) as log:
        before = log.size()
        for kw in ({"principal": "caf\udce9"}, {"reason": "x\ud800"}, {"event_type": "T\udfff"}):
            args: dict[str, Any] = {"principal": "p", "resource": "r", **kw}
            with pytest.raises(ValidationError) as ei:
                log.record("key.hold", **args)
            assert ei.value.rule == "unicode"
        log.record("key.hold", principal="p", resource="r", reason="ok")
        log.flush()
        assert log.size() == before + 1


# --- verifier keys (``audit verify --key``) ------------------------------------------------------


@SETTINGS
@given(st.integers(0, 200), st.text(max_size=6), st.integers(0, 6), any_text)
def test_property_audit_verifier_key_strings(docs: Docs, at: int, chunk: str, cut: int, text: str) -> None:
    """A verifier key as typed on a command line: the key it names, or a ConfigError."""
    vkey = docs.vkey
    at %= len(vkey) + 1
    for candidate in (vkey[:at] + chunk + vkey[at + cut :], text, text + "+" + vkey, vkey.replace("+", chunk, 1)):
        try:
            verifier = AuditVerifier.of(candidate)
        except ConfigError:
            continue
        assert verifier.vkey() == vkey, "a different string named a key"
