"""Several processes making the deployment CA at once (``serve`` replicas sharing one home start
together): one CA comes out, every caller gets it, and its key belongs to its certificate."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eventward._internal.pki import ca_paths, load, open_ca


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


def test_replicas_issuing_the_server_certificate_at_once_write_one_pair(tmp_path):
    """``serve`` replicas starting together each issue the gateway's certificate on first use:
    one pair is written, and its key belongs to its certificate (else one replica's TLS fails)."""
    from eventward._internal.pki import ensure_server_cert

    for round_ in range(3):
        certs = tmp_path / f"certs{round_}"
        barrier = threading.Barrier(4)
        errors: list[str] = []

        def make(certs=certs, barrier=barrier, errors=errors) -> None:
            barrier.wait()
            try:
                ensure_server_cert(certs, "gateway")
            except Exception as e:  # reported by the assertion
                errors.append(repr(e))

        threads = [threading.Thread(target=make) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        pair = load(certs / "gateway.crt", certs / "gateway.key")
        assert _spki(pair.key.public_key()) == _spki(pair.cert.public_key())
        ca = load(*ca_paths(certs))
        pair.cert.verify_directly_issued_by(ca.cert)  # issued by the one CA on disk


def test_replicas_making_the_control_anchor_at_once_make_one(tmp_path):
    """Each serve replica loads the control anchor key, made on first use: made by several at
    once, all get the one key on disk (else grants signed by a lost key fail at the next start)."""
    from eventward._internal.control.anchor import Anchor

    for round_ in range(3):
        path = tmp_path / f"home{round_}" / "control-anchor.key"
        barrier = threading.Barrier(4)
        got: list[str] = []

        def make(path=path, barrier=barrier, got=got) -> None:
            barrier.wait()
            got.append(Anchor.load_or_create(path).public_text)

        threads = [threading.Thread(target=make) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 4 and set(got) == {Anchor.load_or_create(path).public_text}
