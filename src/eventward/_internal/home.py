"""The deployment home: one directory that holds a deployment's state.

Every component finds its files here, so ``--home DIR`` / ``EVENTWARD_HOME`` is all a CLI,
SDK or gateway needs. Secret files are created 0600 and refused if group/world readable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from eventward.errors import ConfigError, KeyFilePermissionError

ENV_VAR = "EVENTWARD_HOME"
DEFAULT_DIR = ".eventward"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None) -> Home:
        p = path or os.environ.get(ENV_VAR) or DEFAULT_DIR
        return cls(Path(p).expanduser().resolve())

    def ensure(self) -> Home:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def require(self) -> Home:
        if not self.root.is_dir():
            raise ConfigError(f"no deployment home at {self.root}: run 'eventward init' first")
        return self

    # --- files -------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "eventward.yaml"

    @property
    def master_key(self) -> Path:
        return self.root / "master.key"

    @property
    def keyring(self) -> Path:
        return self.root / "keyring.bin"

    @property
    def keys_db(self) -> Path:
        return self.root / "keys.db"

    @property
    def registry_db(self) -> Path:
        return self.root / "registry.db"

    @property
    def policy_dir(self) -> Path:
        return self.root / "policy"

    @property
    def audit_db(self) -> Path:
        return self.root / "audit.db"

    @property
    def audit_key(self) -> Path:
        return self.root / "audit.key"

    @property
    def log_db(self) -> Path:
        return self.root / "log.db"

    @property
    def trust_db(self) -> Path:
        return self.root / "trust.db"

    @property
    def producer_keys(self) -> Path:
        return self.root / "producers"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a regular file readable by its owner only (0600).

    The one place databases and secret files get their mode: SQLite gives its -wal/-shm/-journal
    files the mode of the database, so creating the database file 0600 here, before SQLite opens
    it, keeps every file of it private. A symlink is refused (O_NOFOLLOW), and an existing file
    with a looser mode is tightened to 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot create private file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600 (never briefly world-readable).

    The temporary file has a unique name and is created with O_EXCL|O_NOFOLLOW, so a planted
    file or symlink at a predictable name cannot capture the secret or redirect the write; the
    rename is made durable by fsyncing the directory.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others can read or write.

    The checks are made on the opened descriptor (fstat), not on the path, so the file cannot be
    swapped between the check and the read; a symlink in the last component is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise KeyFilePermissionError(f"secret file {path} is a symbolic link; refusing to follow it") from None
        raise ConfigError(f"secret file {path} cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # an OSError, as reading a directory always was
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, "not a regular file")
        if st.st_mode & 0o077:
            raise KeyFilePermissionError(
                f"secret file {path} has mode {st.st_mode & 0o777:o}; it must not be group/world accessible "
                "(chmod 600)"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
