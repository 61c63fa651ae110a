"""golang.org/x/mod/sumdb/note's own vectors through eventward's signed-note code.

The keys, signatures and notes are Go literals in the Debian-installed ``note_test.go`` and
``example_test.go`` (golang-golang-x-mod-dev); they are parsed at test time, never copied
here. Each case states what upstream's test asserts for the same input: the verifier and
signer key formats (and every truncation or one-byte change of them refused), key IDs, the
exact Ed25519 note signature, which signatures verify and which are ignored, ambiguous keys,
the 100-signature limit, a bad signature from a known key, and malformed notes.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit import note
from eventward.errors import AuditIntegrityError, ConfigError

_LITERAL = r'"(?:[^"\\]|\\.)*"'


def go_string(source: str, name: str) -> bytes:
    """The value of ``name := "..." + "..."`` (or a raw backtick string) in Go source, as bytes."""
    m = re.search(rf"\b{name} :?= ((?:{_LITERAL}\s*\+?\s*)+|`[^`]*`)", source)
    assert m, f"{name} not found in the Go test file"
    value = m.group(1)
    if value.startswith("`"):
        return value[1:-1].encode()
    parts = re.findall(_LITERAL, value)
    return b"".join(codecs.escape_decode(p[1:-1].encode())[0] for p in parts)


def refused(fn: Callable[..., object], *args: object) -> bool:
    try:
        fn(*args)
    except (AuditIntegrityError, ConfigError):
        return True
    return False


def manglings(key: str) -> list[str]:
    """Every proper substring and every one-byte increment, as upstream's key tests try."""
    b = key.encode()
    out = {b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))}
    out |= {b[:i] + bytes([(b[i] + 1) % 256]) + b[i + 1 :] for i in range(len(b))}
    return [x.decode("utf-8", "replace") for x in out]


def test_sumdb_note_vectors(sumdb_note_test: str, sumdb_note_example: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = sumdb_note_test
    counts: Counter[str] = Counter()
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        counts["agree" if ok else "disagree"] += 1
        if not ok:
            problems.append(what)

    peter_vkey = go_string(src, "peterKey").decode()
    enoch_vkey = go_string(src, "enochKey").decode()
    skey = go_string(src, "skey").decode()
    text = go_string(src, "text").decode()
    want = go_string(src, "want").decode()
    peter_sig = go_string(src, "peterSig").decode()
    enoch_sig = go_string(src, "enochSig").decode()

    # Verifier and signer keys (TestNewVerifier, TestNewSigner).
    peter = note.parse_vkey(peter_vkey)
    enoch = note.parse_vkey(enoch_vkey)
    check(peter.vkey() == peter_vkey and enoch.vkey() == enoch_vkey, "vkeys round-trip")
    check(peter.key_id.hex() == "c74f20a3" and enoch.key_id.hex() == "af0cfe78", "key IDs")
    for bad in manglings(peter_vkey):
        check(refused(note.parse_vkey, bad), f"mangled vkey accepted: {bad!r}")
    for bad in re.findall(r'badKey\("([^"]+)"\)', src):
        check(refused(note.parse_vkey, bad), f"bad vkey accepted: {bad!r}")
    signer = note.parse_signer_key(skey)
    check(signer.key.vkey() == peter_vkey, "signer key derives the verifier key")
    for bad in manglings(skey):
        check(refused(note.parse_signer_key, bad), f"mangled signer key accepted: {bad[:30]!r}")

    # TestSign: the exact signed note; a text without a final newline is refused.
    check(note.sign_note(text, [signer]) == want, "Sign output")
    check(refused(note.sign_note, "abc", [signer]), "Sign short text")

    # TestOpen.
    msg = text + "\n" + peter_sig + enoch_sig
    n = note.open_note(msg, [peter])
    check(n.text == text and [s.name for s in n.verified] == ["PeterNeumann"], "one verified")
    check([s.name for s in n.unverified] == ["EnochRoot"], "one ignored")
    n = note.open_note(msg, [peter, enoch])
    check([s.name for s in n.verified] == ["PeterNeumann", "EnochRoot"] and not n.unverified, "both verified")
    check(refused(note.open_note, msg, []), "no known key")
    check(refused(note.open_note, text + "\n" + enoch_sig, [enoch, peter, enoch]), "ambiguous key")
    check(not refused(note.open_note, text + "\n" + peter_sig, [enoch, peter, enoch]), "unused duplicate key")
    check(refused(note.open_note, text + "\n" + peter_sig * 101, [peter]), "101 signatures")
    check(refused(note.open_note, text + "\n" + peter_sig * 101, []), "101 unverified signatures")
    check(not refused(note.open_note, text + "\n" + peter_sig * 100, [peter]), "100 signatures")
    broken = text + "\n" + peter_sig[:60] + "ABCD" + peter_sig[60:]
    check(refused(note.open_note, broken, [peter]), "invalid signature from a known key")
    dup = text + "\n" + peter_sig * 2 + enoch_sig * 2 + enoch_sig[:60] + "ABCD" + enoch_sig[60:]
    n = note.open_note(dup, [peter])
    check(len(n.verified) == 1 and len(n.unverified) == 2, "duplicated signatures counted once")
    bad_msgs = [
        text,
        text + "\n",
        text + "\n" + peter_sig[:-1],
        "\x01" + text + "\n" + peter_sig,
        b"\xff" + (text + "\n" + peter_sig).encode(),
        text + "\n" + "\u2014 Bad Name " + peter_sig.split(" ")[-1].strip(),
        text + "\n" + peter_sig + "Unexpected line.\n",
    ]
    for bad in bad_msgs:
        check(refused(note.open_note, bad, [peter]), f"malformed note accepted: {bad[:20]!r}")
    misnamed = peter_sig.replace("PeterNeumann", "CarmenSandiego")
    check(refused(note.open_note, text + "\n" + misnamed, [peter]), "misnamed signature alone")

    # ExampleSign_add_signatures: EnochRoot's key from a zero seed adds its line after Peter's.
    assert "zeroReader" in sumdb_note_example and "EnochRoot" in sumdb_note_example
    zero = note.Signer("EnochRoot", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    check(zero.key.vkey() == enoch_vkey, "zero-seed EnochRoot key")
    opened = note.open_note(want, [peter])
    added = note.sign_note(opened.text, [zero], keep=opened.verified)
    check(added == want + enoch_sig and enoch_sig.strip() in sumdb_note_example, "add signature")

    line = (
        f"C2SP signed-note vectors (golang.org/x/mod sumdb/note): agree {counts['agree']} / "
        f"refused by design 0 / disagree {counts['disagree']}"
    )
    with capsys.disabled():
        print("\n" + line)
    assert counts["disagree"] == 0, "\n".join([line, *problems[:20]])
    assert counts["agree"] > 1000, line
