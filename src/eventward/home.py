"""The deployment home: one directory that holds a deployment's state.

Every component finds its files here, so ``--home DIR`` / ``EVENTWARD_HOME`` is all a CLI,
SDK or gateway needs. Secret files are created 0600 and refused if group/world readable.
"""

from __future__ import annotations

import os
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


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600 (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others can read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist") from None
    if st.st_mode & 0o077:
        raise KeyFilePermissionError(
            f"secret file {path} has mode {st.st_mode & 0o777:o}; it must not be group/world accessible (chmod 600)"
        )
    return path.read_bytes()
