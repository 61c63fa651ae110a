"""A witness: an outside party that cosigns audit checkpoints only if the log never went back.

The witness runs apart from the deployment (``eventward witness``), with its own Ed25519 key and
its own state directory, and holds nothing of the home but the log's public verifier key. It
cosigns (c2sp.org/tlog-cosignature) a new checkpoint only after checking

- the log's own signature on it (``verify_checkpoint``),
- a consistency proof from the last checkpoint it cosigned to the new one (RFC 9162),
- that the tree did not shrink (rollback) or change at the same size (fork),

and then keeps the new checkpoint as its state, written atomically before the cosigned text
is returned. The first checkpoint it sees is trusted on first use. A log that truncated its
records and deleted its stored checkpoints cannot get a cosignature for the shorter tree, and
verifiers that require the witness's cosignature (``audit verify --witness``) notice.

State directory (0700): ``witness.key`` (raw 32-byte Ed25519 seed, 0600), ``witness.json``
(name, the log's verifier key), ``checkpoint`` (the last cosigned checkpoint, with all its lines).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit.checkpoint import Checkpoint, cosign, verify_checkpoint
from eventward._internal.audit.note import ALG_COSIGNATURE_V1, NoteKey, Signer, valid_name
from eventward._internal.audit.signing import AuditVerifier
from eventward._internal.audit.tree import ConsistencyProof
from eventward._internal.audit.verify import check_extends
from eventward._internal.home import read_secret, write_secret
from eventward.errors import (
    AuditIntegrityError,
    AuditUnavailable,
    ConfigError,
    ConflictError,
    EventwardError,
    NotFoundError,
    WitnessRefused,
)

KEY_FILE = "witness.key"
CONFIG_FILE = "witness.json"
CHECKPOINT_FILE = "checkpoint"
LOCK_FILE = "lock"
MAX_REQUEST_BYTES = 128 * 1024


@dataclass(frozen=True)
class CosignResult:
    """What a cosign did: the cosigned text, and the sizes it moved between."""

    text: str
    old_size: int | None  # None: first checkpoint seen (trusted on first use)
    new_size: int


def request_document(checkpoint: str, proof: ConsistencyProof | None) -> str:
    """What the log sends a witness: the new checkpoint and a proof from the witness's last size."""
    doc = {"checkpoint": checkpoint, "proof": None if proof is None else proof.to_dict()}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def parse_request(text: str | bytes) -> tuple[str, ConsistencyProof | None]:
    """Strictly parse a cosign request; anything malformed is an AuditIntegrityError."""
    if len(text) > MAX_REQUEST_BYTES:
        raise AuditIntegrityError("witness request: too large")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise AuditIntegrityError("witness request: not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"checkpoint", "proof"} or not isinstance(doc["checkpoint"], str):
        raise AuditIntegrityError("witness request: expected exactly the fields checkpoint and proof")
    proof = None if doc["proof"] is None else ConsistencyProof.from_dict(doc["proof"])
    return doc["checkpoint"], proof


class Witness:
    """Open with :meth:`open` (or :meth:`init` once); every call re-reads its state from disk."""

    def __init__(self, state_dir: Path, name: str, log_key: AuditVerifier, signer: Signer) -> None:
        self.state_dir = state_dir
        self.name = name
        self.log_key = log_key
        self._signer = signer

    def __repr__(self) -> str:
        return f"Witness({self.name}, {self.state_dir})"

    @classmethod
    def init(cls, state_dir: Path, name: str, log_vkey: str) -> Witness:
        """Create the key and state for witnessing the log whose verifier key is ``log_vkey``."""
        if not valid_name(name):
            raise ConfigError("witness name must be non-empty, without spaces or '+'")
        log_key = AuditVerifier.parse_vkey(log_vkey.strip())
        if (state_dir / KEY_FILE).exists():
            raise ConflictError(f"witness state {state_dir} already exists; it keeps its key and history")
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        seed = os.urandom(32)
        write_secret(state_dir / KEY_FILE, seed)
        write_secret(state_dir / CONFIG_FILE, orjson.dumps({"name": name, "log_key": log_key.vkey()}))
        return cls(state_dir, name, log_key, _signer(name, seed))

    @classmethod
    def open(cls, state_dir: Path) -> Witness:
        if not (state_dir / CONFIG_FILE).is_file():
            raise NotFoundError(f"no witness state at {state_dir}: run 'eventward witness init' first")
        try:
            cfg = orjson.loads(read_secret(state_dir / CONFIG_FILE))
            name, vkey = str(cfg["name"]), str(cfg["log_key"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"witness state {state_dir}/{CONFIG_FILE} is malformed") from None
        seed = read_secret(state_dir / KEY_FILE)
        if len(seed) != 32:
            raise ConfigError(f"witness key {state_dir}/{KEY_FILE} must hold 32 bytes")
        return cls(state_dir, name, AuditVerifier.parse_vkey(vkey), _signer(name, seed))

    @property
    def key(self) -> NoteKey:
        """The cosigner key verifiers pass to ``verify_checkpoint(witnesses=[...])``."""
        return self._signer.key

    def vkey(self) -> str:
        return self.key.vkey()

    def last(self) -> Checkpoint | None:
        """The last checkpoint this witness cosigned (re-verified), or None before the first."""
        path = self.state_dir / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            text = read_secret(path).decode()
        except UnicodeDecodeError:
            raise ConfigError(f"witness state {path} is not a checkpoint") from None
        return verify_checkpoint(text, self.log_key, witnesses=[self.key])

    def cosign(self, checkpoint: str, proof: ConsistencyProof | None, *, now: float | None = None) -> CosignResult:
        """Verify ``checkpoint`` and its consistency with the last one cosigned; cosign and keep it.

        Raises WitnessRefused for a rollback, a fork or a missing or wrong proof, and
        AuditIntegrityError for a checkpoint the log did not sign; the state is then unchanged.
        """
        new = verify_checkpoint(checkpoint, self.log_key)
        with self._locked():  # one cosign at a time across processes: state never moves back
            return self._cosign_locked(checkpoint, new, proof, now)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _cosign_locked(
        self, checkpoint: str, new: Checkpoint, proof: ConsistencyProof | None, now: float | None
    ) -> CosignResult:
        old = self.last()
        try:  # the rule every verifier keeping a checkpoint applies (audit.verify.check_extends)
            check_extends(old, new, proof, kept_by="this witness cosigned")
        except AuditIntegrityError as e:
            raise WitnessRefused(e.message, index=e.index) from None
        stamp = int(time.time() if now is None else now)
        if old is not None:
            stamp = max(stamp, _cosigned_time(old, self.key))
        text = _strip_own(checkpoint, self.key)
        out = cosign(text, self._signer, stamp)
        write_secret(self.state_dir / CHECKPOINT_FILE, out.encode())
        return CosignResult(out, None if old is None else old.size, new.size)


def _signer(name: str, seed: bytes) -> Signer:
    return Signer(name, Ed25519PrivateKey.from_private_bytes(seed), ALG_COSIGNATURE_V1)


def _cosigned_time(cp: Checkpoint, key: NoteKey) -> int:
    for s in cp.cosignatures:
        if (s.name, s.key_id) == (key.name, key.key_id) and len(s.signature) >= 8:
            return int.from_bytes(s.signature[:8], "big")
    return 0


def _strip_own(text: str, key: NoteKey) -> str:
    """The checkpoint without an earlier cosignature of this witness (one line per key)."""
    prefix = f"\u2014 {key.name} "
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(prefix))


# --- over HTTP -----------------------------------------------------------------------------------


def serve(witness: Witness, host: str, port: int, *, ready: Callable[[int], None] | None = None) -> None:
    """Serve the witness over HTTP until interrupted (``witness serve``).

    ``GET /vkey`` the cosigner key, ``GET /checkpoint`` the last cosigned checkpoint (404 before
    the first), ``POST /cosign`` a request document (``request_document``): 200 with the cosigned
    checkpoint, 409 with a JSON problem when refused, 400 when malformed. Requests are small
    (MAX_REQUEST_BYTES) and cosigns are serialized by the witness's lock.
    """

    class Handler(BaseHTTPRequestHandler):
        server_version = "eventward-witness"

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _problem(self, status: int, e: EventwardError) -> None:
            doc = {"code": e.code, "message": e.message}
            self._send(status, orjson.dumps(doc), "application/json")

        def do_GET(self) -> None:
            if self.path == "/vkey":
                self._send(200, (witness.vkey() + "\n").encode())
            elif self.path == "/checkpoint":
                last = witness.last()
                if last is None:
                    self._problem(404, NotFoundError("nothing cosigned yet"))
                else:
                    self._send(200, last.text.encode())
            else:
                self._problem(404, NotFoundError("no such resource"))

        def do_POST(self) -> None:
            if self.path != "/cosign":
                self._problem(404, NotFoundError("no such resource"))
                return
            try:
                n = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_REQUEST_BYTES:
                self._problem(413, AuditIntegrityError("witness request: missing length or too large"))
                return
            try:
                checkpoint, proof = parse_request(self.rfile.read(n))
                result = witness.cosign(checkpoint, proof)
            except WitnessRefused as e:
                self._problem(409, e)
            except AuditIntegrityError as e:
                self._problem(400, e)
            except EventwardError as e:
                self._problem(500, e)
            else:
                self._send(200, result.text.encode())

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    if ready is not None:
        ready(server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()


def submit(url: str, request: str, *, timeout: float = 10.0) -> str:
    """POST a request document to a witness at ``url``; the cosigned checkpoint, or a typed error."""
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked by _http
        url.rstrip("/") + "/cosign", data=request.encode(), headers={"Content-Type": "application/json"}
    )
    return _http(req, timeout)


def fetch(url: str, path: str, *, timeout: float = 10.0) -> str | None:
    """GET ``path`` from a witness; None on 404."""
    try:
        return _http(urllib.request.Request(url.rstrip("/") + path), timeout)  # noqa: S310 - checked by _http
    except NotFoundError:
        return None


def _http(req: urllib.request.Request, timeout: float) -> str:
    if not req.full_url.startswith(("http://", "https://")):
        raise ConfigError("a witness URL is http:// or https://")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            return resp.read(MAX_REQUEST_BYTES).decode()
    except urllib.error.HTTPError as e:
        try:
            problem = orjson.loads(e.read(MAX_REQUEST_BYTES))
            message = str(problem["message"])[:500]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = f"HTTP {e.code}"
        if e.code == 404:
            raise NotFoundError(f"witness: {message}") from None
        if e.code == 409:
            raise WitnessRefused(f"witness refused: {message}") from None
        raise AuditIntegrityError(f"witness: {message}") from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as e:
        raise AuditUnavailable(f"witness at {req.full_url} cannot be reached ({type(e).__name__})") from None
