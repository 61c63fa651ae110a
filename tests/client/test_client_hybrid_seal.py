"""Hybrid seals (Ed25519 + ML-DSA-65, FIPS 204): opt-in per producer, both signatures required,
the suite inside the signed bytes, v1 seals still readable, and a per-stream switch
(``seals.require_hybrid``) that closes a topic to Ed25519-only seals."""

from __future__ import annotations

import sqlite3
import struct
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from eventward._internal.client.trust import TrustRegistry
from eventward._internal.config import Config
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import ED25519, HYBRID, Signer
from eventward._internal.policy.base import PUBLISH
from eventward.errors import ConfigError, SealError

from .client_world import ADMIN, PRODUCER, READER, TOPIC, TYPE, World, customer

OTHER = "other-svc"  # a producer still on Ed25519 (mixed fleet)
_U32 = struct.Struct(">I")


def produce(world: World, n: int, principal: str = PRODUCER) -> list[str]:
    with world.producer(principal) as p:
        return [p.send(TYPE, customer(i)) for i in range(n)]


def consume(world: World, **verifier_kw: object) -> tuple[list[str], dict[str, int]]:
    c = world.consumer(READER, group=f"g-{uuid.uuid4().hex[:8]}", verifier=world.verifier(**verifier_kw))
    got, stats = world.consume(c)
    return [e.id for e in got], stats.refused


def parts(blob: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(body, ed25519 signature, ML-DSA signature, digests) of a hybrid blob."""
    (n,) = _U32.unpack_from(blob)
    body, rest = blob[4 : 4 + n], blob[4 + n :]
    pq_end = sealing.SIGNATURE_SIZE + sealing.MLDSA65_SIGNATURE_SIZE
    return body, rest[: sealing.SIGNATURE_SIZE], rest[sealing.SIGNATURE_SIZE : pq_end], rest[pq_end:]


def assemble(body: bytes, *rest: bytes) -> bytes:
    return b"".join((_U32.pack(len(body)), body, *rest))


def stored_seal(world: World) -> tuple[str, bytes]:
    (rec,) = world.log.read(TOPIC, 0, 1)
    return rec.batch, rec.seal


def tamper(world: World, blob: bytes) -> None:
    """Replace the stored seal, as an attacker with write access to the log file can."""
    db = sqlite3.connect(world.home.log_db, isolation_level=None)
    try:
        db.execute("UPDATE batches SET seal = ? WHERE stream = ?", (blob, TOPIC))
    finally:
        db.close()


@pytest.fixture
def hybrid_world(world: World) -> World:
    world.trust.rotate(PRODUCER, by=ADMIN, suite=HYBRID)  # migrate the producer
    return world


def test_hybrid_sealed_stream_verifies(hybrid_world: World) -> None:
    w = hybrid_world
    sent = produce(w, 5)
    _, blob = stored_seal(w)
    s = sealing.parse(blob)
    assert (s.version, s.suite, len(s.pq_signature)) == (2, HYBRID, sealing.MLDSA65_SIGNATURE_SIZE)
    assert w.trust.info(s.kid).suite == HYBRID and w.trust.resolve(s.kid).pq_public_key is not None
    got, refused = consume(w, require_hybrid=[TOPIC])
    assert got == sent and refused == {}
    assert w.audit.find("trust.rotate", suite=HYBRID)


def test_mixed_fleet_verifies_until_the_topic_requires_hybrid(hybrid_world: World) -> None:
    w = hybrid_world
    w.auth.grant(OTHER, PUBLISH, ("Topic", TOPIC))
    w.trust.ensure(OTHER, by=ADMIN)
    hybrid = produce(w, 2)
    classic = produce(w, 3, OTHER)
    got, refused = consume(w)  # migration: both suites verify
    assert got == hybrid + classic and refused == {}
    got, refused = consume(w, require_hybrid=[TOPIC[:3] + "*"])
    assert got == hybrid and refused == {"hybrid_required": 3}


def test_attack_hybrid_required_refuses_ed25519_seal(world: World) -> None:
    sent = produce(world, 3)  # the producer's key is Ed25519 only
    assert sealing.parse(stored_seal(world)[1]).suite == ED25519
    assert consume(world, require_hybrid=[TOPIC]) == ([], {"hybrid_required": 3})
    assert consume(world, require_hybrid=["payments"]) == (sent, {})


def test_attack_hybrid_seal_stripped_mldsa(hybrid_world: World) -> None:
    w = hybrid_world
    produce(w, 2)
    batch, blob = stored_seal(w)
    body, ed_sig, _pq_sig, digests = parts(blob)
    with pytest.raises(SealError) as e:
        w.verifier().verify_seal(assemble(body, ed_sig, digests), TOPIC, batch)
    assert e.value.reason == "malformed"
    tamper(w, assemble(body, ed_sig, digests))
    assert consume(w) == ([], {"malformed": 2})


@pytest.mark.parametrize("which", ["ed25519", "mldsa"])
def test_attack_hybrid_seal_corrupted_signature(hybrid_world: World, which: str) -> None:
    w = hybrid_world
    produce(w, 2)
    batch, blob = stored_seal(w)
    body, ed_sig, pq_sig, digests = parts(blob)
    if which == "ed25519":
        ed_sig = bytes([ed_sig[0] ^ 1]) + ed_sig[1:]
    else:
        pq_sig = pq_sig[:-1] + bytes([pq_sig[-1] ^ 1])
    with pytest.raises(SealError) as e:
        w.verifier().verify_seal(assemble(body, ed_sig, pq_sig, digests), TOPIC, batch)
    assert e.value.reason == "bad_signature"
    # An ML-DSA signature of another key (same suite, right length) is no better.
    other_pq = MLDSA65PrivateKey.generate().sign(body, b"eventward-seal-v2")
    with pytest.raises(SealError) as e:
        w.verifier().verify_seal(assemble(body, parts(blob)[1], other_pq, digests), TOPIC, batch)
    assert e.value.reason == "bad_signature"


def test_attack_hybrid_suite_relabelled(hybrid_world: World) -> None:
    w = hybrid_world
    produce(w, 2)
    batch, blob = stored_seal(w)
    body, ed_sig, _pq_sig, digests = parts(blob)
    assert body[4:6] == bytes((sealing.HYBRID_VERSION, 2))
    as_v1 = assemble(sealing.MAGIC + bytes((sealing.FORMAT_VERSION,)) + body[6:], ed_sig, digests)
    s = sealing.parse(as_v1)  # parses as a well-formed Ed25519-only seal ...
    assert s.suite == ED25519
    with pytest.raises(SealError) as e:  # ... which the hybrid key never accepts
        w.verifier().verify_seal(as_v1, TOPIC, batch)
    assert e.value.reason == "suite_mismatch"
    with pytest.raises(SealError) as e:  # and whose Ed25519 signature covered the hybrid body anyway
        sealing.verify(s, w.trust.resolve(s.kid).public_key)
    assert e.value.reason == "bad_signature"
    unknown_suite = assemble(body[:5] + b"\x07" + body[6:], ed_sig, _pq_sig, digests)
    with pytest.raises(SealError) as e:
        sealing.parse(unknown_suite)
    assert e.value.reason == "malformed"
    tamper(w, as_v1)
    assert consume(w) == ([], {"suite_mismatch": 2})


def test_attack_hybrid_claim_for_classical_key(world: World) -> None:
    """A thief of an Ed25519 key adding an ML-DSA key of their own gains nothing: the registry
    binds no ML-DSA key to that kid, so the hybrid seal is refused."""
    classical = world.trust.signer_for(PRODUCER)
    assert classical.suite == ED25519
    stolen = Signer(PRODUCER, classical._key, MLDSA65PrivateKey.generate())
    blob = sealing.seal(stolen, instance="x", stream=TOPIC, batch="b-1", first_seq=0, events=[b"{}"])
    with pytest.raises(SealError) as e:
        world.verifier().verify_seal(blob, TOPIC, "b-1")
    assert e.value.reason == "suite_mismatch"


def test_v1_seals_stay_readable_after_migration(world: World) -> None:
    old = produce(world, 2)
    world.trust.rotate(PRODUCER, by=ADMIN, suite=HYBRID)
    new = produce(world, 2)
    got, refused = consume(world)
    assert got == old + new and refused == {}


def test_registry_keeps_the_mldsa_half_bound_and_private(hybrid_world: World) -> None:
    w = hybrid_world
    signer = w.trust.signer_for(PRODUCER)
    pq_file = w.home.producer_keys / f"{PRODUCER}.{signer.kid}.mldsa.key"
    assert signer.suite == HYBRID and pq_file.stat().st_mode & 0o077 == 0
    pq_file.write_bytes(MLDSA65PrivateKey.generate().private_bytes_raw())  # a swapped seed never signs
    with pytest.raises(ConfigError):
        w.trust.signer_for(PRODUCER)
    back = w.trust.rotate(PRODUCER, by=ADMIN)  # back to Ed25519: the retired ML-DSA half is deleted
    assert back.suite == ED25519 and not pq_file.exists()
    hybrid = w.trust.rotate(PRODUCER, by=ADMIN, suite=HYBRID)
    w.trust.revoke(hybrid.kid, by=ADMIN)
    assert not (w.home.producer_keys / f"{PRODUCER}.{hybrid.kid}.mldsa.key").exists()
    with pytest.raises(Exception, match="suite"):
        w.trust.rotate(PRODUCER, by=ADMIN, suite="ed25519+rsa")


def test_registry_without_the_mldsa_column_is_migrated(tmp_path) -> None:
    from eventward._internal.home import Home

    home = Home(tmp_path / "h").ensure()
    db = sqlite3.connect(home.trust_db)
    db.execute(
        "CREATE TABLE keys(kid TEXT PRIMARY KEY, principal TEXT NOT NULL, public BLOB NOT NULL, "
        "status TEXT NOT NULL, created REAL NOT NULL, changed REAL NOT NULL, changed_by TEXT NOT NULL)"
    )
    pub = Ed25519PrivateKey.generate().public_key()
    kid = sealing.kid_of(pub)
    db.execute("INSERT INTO keys VALUES (?, 'svc', ?, 'active', 1, 1, 'admin')", (kid, pub.public_bytes_raw()))
    db.commit()
    db.close()
    from .client_world import grants

    reg = TrustRegistry.open(home, grants())
    try:
        k = reg.resolve(kid)
        assert (k.suite, k.purpose, reg.info(kid).suite) == (ED25519, "seal", ED25519)
    finally:
        reg.close()


def test_config_require_hybrid() -> None:
    assert Config.parse("seals: {require_hybrid: [orders, 'pay*']}").seals.require_hybrid == ["orders", "pay*"]
    for bad in ("seals: {require_hybrid: ['*']}", "seals: {require_hybrid: ['']}", "seals: {require: [x]}"):
        with pytest.raises(ConfigError):
            Config.parse(bad)


CLI_POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin]}
  signup: {type: service, roles: [writer]}
  legacy: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
  schema-author: [{allow: propose_schema, schema: "*"}]
  schema-admin: [{allow: approve_schema, schema: "*"}]
  writer: [{allow: publish, topic: signups, event_types: [SignedUp]}]
  reader: [{allow: subscribe, topic: signups}]
"""
PLAIN_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {"n": {"type": "integer"}},
}


def test_attack_hybrid_required_topic_cli(tmp_path) -> None:
    """Through a real Deployment and the CLI: ``trust register --suite`` makes a hybrid producer,
    and eventward.yaml ``seals.require_hybrid`` makes consumers refuse the Ed25519-only one."""
    import orjson
    import yaml
    from typer.testing import CliRunner

    from eventward._internal.cli import app
    from eventward._internal.deployment import Deployment
    from eventward._internal.home import Home

    home = Home(tmp_path / "home")
    with Deployment.init(home, policy_yaml=CLI_POLICY) as dep:
        dep.registry.propose("alice", "SignedUp", PLAIN_SCHEMA)
        dep.registry.approve("bob", "SignedUp", 1)

    def run(*args: str, input: str | None = None) -> object:
        return CliRunner().invoke(app, ["--home", str(home.root), *args], input=input, env={"COLUMNS": "300"})

    r = run("trust", "register", "signup", "--suite", HYBRID, "--as", "admin")
    assert r.exit_code == 0 and HYBRID in r.output, r.output
    assert run("trust", "register", "legacy", "--as", "admin").exit_code == 0
    keys = {k["principal"]: k["suite"] for k in orjson.loads(run("trust", "list", "--json").stdout)["keys"]}
    assert keys == {"signup": HYBRID, "legacy": ED25519}
    data = "\n".join(orjson.dumps({"type": "SignedUp", "data": {"n": i}}).decode() for i in range(2))
    hybrid_ids = run("produce", "signups", "-", "--as", "signup", input=data).stdout.split()
    legacy_ids = run("produce", "signups", "-", "--as", "legacy", input=data).stdout.split()
    assert len(hybrid_ids) == len(legacy_ids) == 2

    def consumed() -> list[str]:
        r = run("consume", "signups", "--as", "billing", "--from-beginning", "--idle", "0", "-g", uuid.uuid4().hex)
        return [orjson.loads(line)["id"] for line in r.stdout.splitlines() if line.strip()]

    assert consumed() == hybrid_ids + legacy_ids  # mixed fleet
    cfg = yaml.safe_load(home.config.read_text())
    cfg["seals"] = {"require_hybrid": ["signups"]}
    home.config.write_text(yaml.safe_dump(cfg))
    assert consumed() == hybrid_ids


def test_attack_hybrid_seal_byte_flips_are_refused() -> None:
    """Every header byte, and a spread of signature and digest bytes, matter: a flipped byte
    anywhere is malformed, a bad signature or a root mismatch, never a verified seal."""
    signer = Signer("svc", Ed25519PrivateKey.generate(), MLDSA65PrivateKey.generate())
    events = [b'{"id":"a"}', b'{"id":"b"}']
    blob = sealing.seal(signer, instance="i", stream="orders", batch="b-1", first_seq=0, events=events)
    pub, pq = signer.public_key(), signer.pq_public_key()
    sealing.verify(sealing.parse(blob), pub, pq)
    (body_len,) = _U32.unpack_from(blob)
    positions = sorted({*range(4 + body_len + 8), *range(0, len(blob), 11), len(blob) - 1})
    for i in positions:
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(SealError):
            s = sealing.parse(bytes(bad))
            sealing.verify(s, pub, pq)
            for j, e in enumerate(events):
                sealing.check_event(s, j, e)


def test_enrolled_hybrid_key_verifies_hybrid_seals_only(world: World) -> None:
    """Client mode: a service keeps both private halves and enrolls the public ones."""
    service = Signer(PRODUCER, Ed25519PrivateKey.generate(), MLDSA65PrivateKey.generate())
    pq_pub = service.pq_public_key()
    assert pq_pub is not None
    kid = world.trust.enroll(PRODUCER, service.public_key(), by=ADMIN, pq_public_key=pq_pub)
    assert world.trust.info(kid).suite == HYBRID
    blob = sealing.seal(service, instance="svc", stream=TOPIC, batch="b-9", first_seq=0, events=[b"{}"])
    assert world.verifier().verify_seal(blob, TOPIC, "b-9").suite == HYBRID
    classical = Signer(PRODUCER, service._key)  # the same Ed25519 key, no ML-DSA signature
    blob = sealing.seal(classical, instance="svc", stream=TOPIC, batch="b-10", first_seq=1, events=[b"{}"])
    with pytest.raises(SealError) as e:
        world.verifier().verify_seal(blob, TOPIC, "b-10")
    assert e.value.reason == "suite_mismatch"
