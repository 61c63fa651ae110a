"""Several processes making the deployment CA at once (``serve`` replicas sharing one home start
together): one CA comes out, every caller gets it, and its key belongs to its certificate."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eventward.pki import ca_paths, load, open_ca


def _spki(public_key) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_callers_creating_the_ca_at_once_make_one(tmp_path):
    for round_ in range(4):
        certs = tmp_path / f"certs{round_}"
        barrier = threading.Barrier(4)
        got: list[object] = [None] * 4

        def make(i: int, certs=certs, barrier=barrier, got=got) -> None:
            barrier.wait()
            try:
                ca = open_ca(certs, create=True)
                got[i] = _spki(ca.cert.public_key())
                ca.close()
            except Exception as e:  # reported by the assertion
                got[i] = repr(e)

        threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(set(got)) == 1 and isinstance(got[0], bytes), got
        pair = load(*ca_paths(certs))
        assert _spki(pair.cert.public_key()) == got[0]
        assert _spki(pair.key.public_key()) == got[0]  # the key on disk is the certificate's
