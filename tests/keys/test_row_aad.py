"""dek.row_aad builds the format 2 AAD with one Struct per (kid, class, subject hash) lengths:
the same bytes as dek_aad for any parts, and a row whose columns have the wrong types is still
an error the batch path turns into that key's KeyIntegrityError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.keys.dek import AAD_V1, AAD_V2, dek_aad, row_aad


@settings(max_examples=300, deadline=None)
@given(kid=st.text(max_size=40), cls=st.text(max_size=40), shash=st.text(max_size=40),
       version=st.integers(0, 2**64 - 1), created=st.floats(allow_nan=False))
def test_row_aad_is_dek_aad_for_any_parts(kid, cls, shash, version, created):
    row = (kid, cls, shash, version, "pii:1", b"w", created, AAD_V2)
    assert row_aad(row) == dek_aad(kid, cls, shash, version, created, fmt=AAD_V2)
    assert row_aad((*row[:7], AAD_V1)) == dek_aad(kid, cls, shash)


@pytest.mark.parametrize("bad", [
    (b"kid", "pii", "h", 1, "pii:1", b"w", 1.0, AAD_V2),  # a BLOB kid
    ("kid", "pii", "h", "1", "pii:1", b"w", 1.0, AAD_V2),  # a TEXT version
    ("kid", "pii", "h", -1, "pii:1", b"w", 1.0, AAD_V2),  # out of range
    ("kid", "pii", "h", 1, "pii:1", b"w", "now", AAD_V2),  # a TEXT time
])
def test_row_aad_refuses_columns_of_the_wrong_type(bad):
    with pytest.raises((AttributeError, TypeError, struct.error)):
        row_aad(bad)
