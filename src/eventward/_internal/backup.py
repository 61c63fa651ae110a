"""Backup and restore of a home that cannot resurrect an erased subject.

The key state is *anchored* in the audit log: after every forget and every KEK rotation (and at
each backup and restore) a ``keys.anchor`` record states the erasure ledger's chain head and
entry count and, for the local keyring, its generation counter. A restore compares the backup
with the newest anchor (and with the live files) before anything is copied:

- another deployment's backup (its audit key names another log) is refused;
- a keyring older than the anchored generation is refused: it still holds KEK versions that
  rotation destroyed, and with them every DEK the backup's store wrapped under them (the backup
  says which epochs ended); the wrapped DEKs in the backup unwrap under no KEK the KMS still holds;
- an erasure ledger that does not extend the anchored head is refused; the newer of the live and
  the backup ledger is kept (one must extend the other), and the audit log is never rolled back
  below the live one or below the checkpoint the verifier remembers (``audit.state``);
- the restored key store is then opened, which replays the ledger (deleting the DEKs of every
  subject forgotten after the backup) before anything is served.

A backup is a directory: consistent SQLite copies (the backup API) of every database of the home,
the other files byte for byte (0600), and ``manifest.json`` with each file's SHA-256, the key state
and an HMAC under the KMS's ledger secret, so only this deployment's KMS vouches for it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.signing import load_signer
from eventward._internal.audit.state import load_state
from eventward._internal.audit.verify import verify_consistency_proof
from eventward._internal.config import Config
from eventward._internal.home import Home, private_file, write_secret
from eventward._internal.keys.kms import connect_kms
from eventward._internal.keys.kms.base import KMS, MAC_LEDGER
from eventward._internal.keys.kms.local import MODE_PASSPHRASE, LocalKMS
from eventward._internal.keys.ledger import ErasureLedger, LedgerHead
from eventward._internal.keys.service import KeyService, erasures_log_path
from eventward.errors import (
    AuditIntegrityError,
    ConfigError,
    EventwardError,
    KeyServiceError,
    NotFoundError,
    RestoreRefused,
)

FORMAT = "eventward-backup/1"
MANIFEST = "manifest.json"
ANCHOR_ACTION = "keys.anchor"
ANCHOR_KIND = "keys-anchor"
PASSPHRASE_ENV = "EVENTWARD_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
_SKIP_DIRS = {"run"}
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".tmp")
_SQLITE = b"SQLite format 3\x00"


@dataclass(frozen=True)
class KeyState:
    """What is anchored: the erasure ledger's size and chain head, the keyring's generation."""

    ledger_entries: int
    ledger_head: str
    keyring_generation: int | None  # None: KEKs live in an external KMS, outside any backup

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {"ledger_entries": self.ledger_entries, "ledger_head": self.ledger_head}
        if self.keyring_generation is not None:
            m["keyring_generation"] = self.keyring_generation
        return m


def _refuse_postgres(home: Home, what: str) -> None:
    """backup/restore copy the home's SQLite stores; with store.backend postgres the key store and
    audit log live in the database, so a copy of the home alone would silently leave them out."""
    if home.config.exists() and Config.load(home.config).store.backend == "postgres":
        raise ConfigError(
            f"'{what}' copies an embedded home's SQLite stores; this home keeps its keys and audit log in "
            "PostgreSQL (store.backend): back up the database with PostgreSQL's tools (pg_dump, "
            "pg_basebackup) together with the home directory"
        )


def deployment_id(home: Home) -> str:
    """The deployment's identity: the name of its audit key (the origin of every checkpoint)."""
    if not home.audit_key.exists():
        raise NotFoundError(f"no deployment at {home.root} (no audit key)")
    return load_signer(home.audit_key).name


def key_state(keys: KeyService) -> KeyState:
    gen = keys.kms.generation() if isinstance(keys.kms, LocalKMS) else None
    head = keys.ledger.current()
    return KeyState(head.entries, head.head, gen)


def anchor_keys(audit: AuditLog, keys: KeyService, *, principal: str = "eventward.keys", reason: str = "change") -> int:
    """Append a ``keys.anchor`` record of the current key state; returns its index."""
    st = key_state(keys)
    (index,) = audit.append_many(
        [{"action": ANCHOR_ACTION, "principal": principal, "resource": "Keys::state", "reason": reason,
          "meta": st.meta()}]
    )
    audit.attach(ANCHOR_KIND, "head", index, "")  # an index of the newest anchor: see latest_anchor
    return index


def _anchor(body: bytes) -> KeyState | None:
    try:
        rec = orjson.loads(body)
        if rec.get("action") != ANCHOR_ACTION:
            return None
        m = rec["meta"]
        gen = m.get("keyring_generation")
        return KeyState(int(m["ledger_entries"]), str(m["ledger_head"]), None if gen is None else int(gen))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise AuditIntegrityError("a keys.anchor record is malformed") from None


def anchored_state(log: AuditLog) -> KeyState | None:
    """The newest ``keys.anchor`` record's key state, read from every record (what restore trusts)."""
    found: KeyState | None = None
    needle = f'"action":"{ANCHOR_ACTION}"'.encode()
    for _, _, body in log.scan():
        if needle in bytes(body) and (st := _anchor(bytes(body))) is not None:
            found = st
    return found


def latest_anchor(log: AuditLog) -> KeyState | None:
    """The newest anchor in O(1) through the attachment index (for checks on every open): the
    indexed record itself is read and must be an anchor. Deleting index rows only yields an older
    anchor; ``anchored_state`` reads the records themselves."""
    rows = log.attachments(ANCHOR_KIND, "head")
    if not rows:
        return None
    st = _anchor(log.get(rows[-1][0]).body)
    if st is None:
        raise AuditIntegrityError("the key-state anchor index points at a record that is not an anchor")
    return st


# --- backup ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupReport:
    path: Path
    deployment: str
    files: int
    keyring_generation: int | None
    ledger_entries: int
    audit_size: int


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not (rel == Path(".") and d in _SKIP_DIRS))
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == _SQLITE


def _copy_sqlite(src: Path, dst: Path) -> None:
    private_file(dst)
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
        d.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
    finally:
        s.close()
        d.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _mac_input(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "mac"}
    return FORMAT.encode() + b"\n" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _kek_versions(keys_db: Path) -> list[str]:
    if not keys_db.exists():
        return []
    db = sqlite3.connect(f"file:{keys_db}?mode=ro", uri=True)
    try:
        return sorted(k for (k,) in db.execute("SELECT DISTINCT kek_id FROM deks"))
    finally:
        db.close()


def backup(dep: Any, dest: Path, *, principal: str = "admin") -> BackupReport:
    """Back up ``dep``'s home (a Deployment) into the new directory ``dest``."""
    home: Home = dep.home
    _refuse_postgres(home, "backup")
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"backup directory {dest} is not empty")
    if dest.resolve().is_relative_to(home.root):
        raise ConfigError("the backup directory must be outside the home")
    anchor_keys(dep.audit, dep.keys, principal=principal, reason="backup")
    dep.audit.flush()
    st = key_state(dep.keys)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    hashes: dict[str, str] = {}
    for src in _files(home.root):
        rel = src.relative_to(home.root)
        out = dest / "home" / rel
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _is_sqlite(src):
            _copy_sqlite(src, out)
        else:
            write_secret(out, src.read_bytes())
        hashes[rel.as_posix()] = _sha256(out)
    audit_size = AuditLog.open_readonly(dest / "home" / "audit.db")
    with audit_size as copy:
        size, root = copy.size(), copy.root()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "deployment": deployment_id(home),
        "created": time.time(),
        "files": hashes,
        "key_state": st.meta(),
        "kek_versions": _kek_versions(dest / "home" / "keys.db"),
        "audit": {"size": size, "root": root.hex()},
    }
    manifest["mac"] = dep.keys.kms.mac(MAC_LEDGER, _mac_input(manifest)).hex()
    write_secret(dest / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    dep.audit.record("backup.create", principal=principal, resource="Home::backup", files=len(hashes),
                     audit_size=size, ledger_entries=st.ledger_entries)
    dep.audit.flush()
    return BackupReport(dest, manifest["deployment"], len(hashes), st.keyring_generation, st.ledger_entries, size)


# --- restore -----------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    deployment: str
    files: int
    kept_live: list[str] = field(default_factory=list)  # files newer in the home than in the backup
    erasures_replayed: int = 0  # ledger entries the backup's key store did not know
    keys_removed: int = 0  # DEKs of forgotten subjects the replay deleted from the restored store


def _load_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{src} is not an eventward backup (no {MANIFEST})") from None
    except (OSError, orjson.JSONDecodeError):
        raise RestoreRefused(f"backup manifest {path} is unreadable or not JSON") from None
    keys = {"format", "deployment", "created", "files", "key_state", "kek_versions", "audit", "mac"}
    if not isinstance(doc, dict) or set(doc) != keys or doc["format"] != FORMAT or not isinstance(doc["files"], dict):
        raise RestoreRefused(f"backup manifest {path} is not an {FORMAT} manifest")
    for rel, digest in doc["files"].items():
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or not isinstance(digest, str):
            raise RestoreRefused("backup manifest names a file outside the backup")
        f = src / "home" / p
        if not f.is_file() or _sha256(f) != digest:
            raise RestoreRefused(f"backup file {rel} is missing or altered since the backup was taken")
    return doc


def _open_local(home: Home) -> KMS | None:
    """The KMS of ``home`` (its keyring and master key, or the configured external KMS), or None."""
    external = connect_kms(Config.load(home.config).kms, create=False)
    if external is not None:
        return external
    if not home.keyring.exists():
        return None
    passphrase = None
    if LocalKMS.header_mode(home.keyring) == MODE_PASSPHRASE:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    return LocalKMS.open(home.keyring, master_key_path=home.master_key, passphrase=passphrase)


def _ledger(path: Path, kms: KMS) -> LedgerHead:
    if not path.exists():
        return LedgerHead(0, "00" * 32, ())
    return ErasureLedger(path, lambda data: kms.mac(MAC_LEDGER, data)).head()


def _backup_erasures(keys_db: Path) -> set[tuple[str, float]]:
    if not keys_db.exists():
        return set()
    db = sqlite3.connect(f"file:{keys_db}?mode=ro", uri=True)
    try:
        return {(str(s), float(t)) for s, t in db.execute("SELECT subject_hash, time FROM erasures")}
    finally:
        db.close()


def _destroyed(kms: KMS | None, versions: list[str]) -> list[str]:
    if kms is None:
        return []
    gone = set()
    for cls in kms.classes():
        gone.update(kms.destroyed(cls))
    return [v for v in versions if v in gone]


def restore(src: Path, home: Home, *, principal: str = "admin", state: Path | None = None) -> RestoreReport:
    """Restore the backup ``src`` into ``home`` (empty, or this deployment's) without resurrecting
    anything; the restored store replays the erasure ledger before the deployment serves."""
    _refuse_postgres(home, "restore")
    manifest = _load_manifest(src)
    bhome = Home(src / "home")
    deployment = str(manifest["deployment"])
    if deployment_id(bhome) != deployment:
        raise RestoreRefused("the backup's audit key does not match its manifest")
    live = home.audit_key.exists()
    if live and deployment_id(home) != deployment:
        raise RestoreRefused(
            f"this backup belongs to deployment {deployment}, not to the one in {home.root} "
            f"({deployment_id(home)}): restoring another deployment's keys and log is refused"
        )
    opened: list[KMS] = []
    try:
        live_kms = _open_local(home) if live else None
        if live_kms is not None:
            opened.append(live_kms)
        backup_kms = _open_local(bhome) if bhome.keyring.exists() else None
        if backup_kms is not None:
            opened.append(backup_kms)
        mac_kms = live_kms or backup_kms
        if mac_kms is None:
            raise RestoreRefused("no KMS to authenticate the backup with (no keyring and no external KMS)")
        if not hmac.compare_digest(str(manifest["mac"]), mac_kms.mac(MAC_LEDGER, _mac_input(manifest)).hex()):
            raise RestoreRefused("the backup manifest is not authenticated by this deployment's KMS")
        return _restore(src, bhome, home, manifest, live, live_kms, backup_kms, mac_kms, principal, state)
    except KeyServiceError as e:
        raise RestoreRefused(f"restore refused: the key material cannot be read ({e.code}): {e.message}") from None
    finally:
        for k in opened:
            k.close()


def _restore(
    src: Path, bhome: Home, home: Home, manifest: dict[str, Any], live: bool, live_kms: KMS | None,
    backup_kms: KMS | None, mac_kms: KMS, principal: str, state: Path | None,
) -> RestoreReport:
    deployment = str(manifest["deployment"])
    kept: list[str] = []
    # 1. The newest anchored key state: from the live audit log, and the backup's own.
    anchors: list[KeyState] = []
    live_audit = None
    if live and home.audit_db.exists():
        live_audit = AuditLog.open(home)
    try:
        if live_audit is not None and (a := anchored_state(live_audit)) is not None:
            anchors.append(a)
        with AuditLog.open_readonly(bhome.audit_db) as copy:
            if (a := anchored_state(copy)) is not None:
                anchors.append(a)
            b_size, b_root = copy.size(), copy.root()
        # 2. Keyring: never older than the anchored generation or the live keyring.
        gens = [a.keyring_generation for a in anchors if a.keyring_generation is not None]
        if isinstance(live_kms, LocalKMS):
            gens.append(live_kms.generation())
        needed = max(gens, default=0)
        versions = [str(v) for v in manifest["kek_versions"]]
        ended = _destroyed(live_kms, versions)
        if isinstance(backup_kms, LocalKMS) and backup_kms.generation() < needed:
            raise RestoreRefused(
                f"the backup's keyring (generation {backup_kms.generation()}) is older than the anchored key "
                f"state (generation {needed}): it still holds KEK versions destroyed since"
                + (f" ({', '.join(ended)}); this backup's keys wrapped under them belong to an ended epoch and "
                   "are unrecoverable by design" if ended else "")
                + ". Restoring it would resurrect erased subjects; refused."
            )
        if ended:
            raise RestoreRefused(
                f"this backup's key store is wrapped under KEK versions destroyed since it was taken "
                f"({', '.join(ended)}): that key epoch has ended and its keys are unrecoverable by design"
            )
        # 3. Ledger: keep the newer of live and backup (one must extend the other), never below the anchor.
        b_ledger = _ledger(erasures_log_path(bhome), mac_kms)
        l_ledger = _ledger(erasures_log_path(home), mac_kms) if live else LedgerHead(0, "00" * 32, ())
        if l_ledger.extends(b_ledger):
            chosen, keep_ledger = l_ledger, live and l_ledger.entries > 0
        elif b_ledger.extends(l_ledger):
            chosen, keep_ledger = b_ledger, False
        else:
            raise RestoreRefused("the backup's erasure ledger and the home's have diverged (neither extends the other)")
        for a in anchors:
            if a.ledger_entries and not chosen.extends(LedgerHead(a.ledger_entries, a.ledger_head)):
                raise RestoreRefused(
                    f"the erasure ledger ({chosen.entries} entries) is older than the anchored head "
                    f"({a.ledger_entries} entries): an erasure would be lost; refused"
                )
        if keep_ledger:
            kept.append(erasures_log_path(home).name)
        # 4. Audit log: never rolled back below the live log or the verifier's remembered checkpoint.
        keep_audit = False
        if live_audit is not None:
            l_size = live_audit.size()
            if l_size >= b_size:
                try:
                    verify_consistency_proof(live_audit.consistency(b_size, l_size), b_root, live_audit.root(l_size))
                except AuditIntegrityError:
                    raise RestoreRefused("the backup's audit log and the home's have diverged (fork)") from None
                keep_audit = True
                kept.append(home.audit_db.name)
            else:  # the backup's log is longer: it must extend the home's, never replace a fork of it
                with AuditLog.open_readonly(bhome.audit_db) as copy:
                    try:
                        verify_consistency_proof(copy.consistency(l_size, b_size), live_audit.root(l_size), b_root)
                    except AuditIntegrityError:
                        raise RestoreRefused("the backup's audit log and the home's have diverged (fork)") from None
        remembered = load_state(state) if state is not None else None
        if remembered is not None:
            cp = verify_checkpoint(remembered, load_signer(bhome.audit_key).verifier)
            size = live_audit.size() if keep_audit and live_audit is not None else b_size
            if size < cp.size:
                raise RestoreRefused(
                    f"the audit log after restore would have {size} records, fewer than the {cp.size} of the "
                    "checkpoint the verifier remembers: restoring would roll the audit log back; refused"
                )
    finally:
        if live_audit is not None:
            live_audit.close()
    # 5. Copy, then open: KeyService replays the ledger before anything is served.
    known = _backup_erasures(bhome.keys_db)
    home.ensure()
    names = [Path(rel) for rel in manifest["files"]]
    names = [n for n in names if not (keep_audit and n == Path(home.audit_db.name))
             and not (keep_ledger and n == Path("erasures.log"))]
    # Everything is copied next to the home first and checked again, then renamed into place: a full
    # disk or a tampered backup fails before any file of the home has changed.
    staging = home.root / f".restore-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        for name in names:
            out = staging / name
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copyfile(src / "home" / name, out)
            os.chmod(out, 0o600)
            if _sha256(out) != manifest["files"][name.as_posix()]:
                raise RestoreRefused(f"backup file {name.as_posix()} changed while it was being restored")
        for name in names:
            target = home.root / name
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(staging / name, target)
    except OSError as e:
        raise RestoreRefused(f"restore failed while copying ({e.strerror or type(e).__name__})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = len(names)
    replayed = 0
    if keep_ledger:
        ledger = ErasureLedger(erasures_log_path(home), lambda data: mac_kms.mac(MAC_LEDGER, data))
        replayed = sum(1 for e in ledger.load() if (e.subject_hash, e.time) not in known)
    report = RestoreReport(deployment, files, kept, replayed)
    report.keys_removed = _open_and_anchor(home, principal, report)
    return report


def _open_and_anchor(home: Home, principal: str, report: RestoreReport) -> int:
    from eventward._internal.deployment import Deployment

    before = _dek_count(home.keys_db)
    try:
        dep = Deployment.open(home)
    except EventwardError as e:
        raise RestoreRefused(f"the restored home does not open ({e.code}): {e.message}") from None
    with dep:
        removed = max(before - _dek_count(home.keys_db), 0)
        anchor_keys(dep.audit, dep.keys, principal=principal, reason="restore")
        dep.audit.record("backup.restore", principal=principal, resource="Home::backup", files=report.files,
                         kept_live=len(report.kept_live), erasures_replayed=report.erasures_replayed,
                         keys_removed=removed)
    return removed


def _dek_count(keys_db: Path) -> int:
    if not keys_db.exists():
        return 0
    db = sqlite3.connect(f"file:{keys_db}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM deks").fetchone()[0])
    finally:
        db.close()
