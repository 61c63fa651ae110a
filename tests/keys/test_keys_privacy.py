"""The raw data-subject id never reaches receipts, errors, audit records, logs, reprs or files."""

from __future__ import annotations

import logging

import pytest

from eventward._internal.keys.service import erasures_log_path
from eventward.errors import EventwardError

from .conftest import CLASSES, SENTINEL, store_files


def test_raw_subject_id_never_leaks(open_svc, home, audit, caplog):
    caplog.set_level(logging.DEBUG)
    svc = open_svc()
    seen: list[str] = []
    kids = {cls: svc.encryption_key(SENTINEL, cls, principal="producer")[0] for cls in CLASSES}
    svc.rotate_dek(SENTINEL, "pii", principal="admin")
    errors: list[EventwardError] = []
    for attempt in (
        lambda: svc.decryption_key(kids["payment"], "payment", principal="reader"),
        lambda: svc.forget(SENTINEL, principal="reader"),
        lambda: svc.hold(SENTINEL, principal="nobody", reason="x"),
        lambda: svc.rotate_dek(SENTINEL, "pii", principal="nobody"),
    ):
        with pytest.raises(EventwardError) as ei:
            attempt()
        errors.append(ei.value)
    svc.hold(SENTINEL, principal="admin", reason="litigation")
    with pytest.raises(EventwardError) as ei:
        svc.forget(SENTINEL, principal="admin")
    errors.append(ei.value)
    svc.release(SENTINEL, principal="admin")
    svc.rotate_kek("pii", principal="admin")
    receipt = svc.forget(SENTINEL, principal="admin", reason="erasure-request")
    for cls, kid in kids.items():
        with pytest.raises(EventwardError) as ei:
            svc.decryption_key(kid, cls, principal="admin")
        errors.append(ei.value)
    with pytest.raises(EventwardError) as ei:
        svc.encryption_key(SENTINEL * 100, "pii", principal="p")  # oversize id
    errors.append(ei.value)

    seen.append(repr(receipt) + receipt.statement() + repr(svc) + repr(svc.cache) + repr(svc.status()))
    for e in errors:
        seen.append(f"{e} {e!r} {e.details!r} {getattr(e, 'explanation', None)!r}")
    for ev in audit.events:
        seen.append(repr(ev))
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert receipt.subject_hash in text and len(errors) == 9 and len(audit.events) > 10
    assert SENTINEL not in text and SENTINEL.split("@")[0] not in text
    for name, data in store_files(home).items():
        assert SENTINEL.encode() not in data, name
    assert SENTINEL.encode() not in erasures_log_path(home).read_bytes()
