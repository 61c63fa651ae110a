"""A private SoftHSM2 token directory for the PKCS#11 KMS tests.

SoftHSM reads SOFTHSM2_CONF and lists its tokens once, at C_Initialize, so every token the tests
use is initialised up front; each test then starts from an emptied token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.keys.kms.pkcs11 import Pkcs11Config, Pkcs11KMS, softhsm_module, token_session
from eventward._internal.keys.service import KeyService
from eventward._internal.policy.base import DECRYPT, ENCRYPT, FORGET, HOLD, ROTATE_KEYS, AllowList
from eventward.errors import KMSUnavailable

PIN = "ew-pin-8c1f"
SO_PIN = "ew-so-pin-77a0"
PIN_ENV = "EVENTWARD_TEST_HSM_PIN"
TOKEN = "eventward-test"
LOCKED_TOKEN = "eventward-pin"  # never logged in successfully: wrong-PIN tests get a clean login state
WORKER = Path(__file__).with_name("hsm_worker.py")
WRITERS = ("admin", "p", "producer", "w", "writer")


@dataclass(frozen=True)
class SoftHSM:
    module: str
    conf: Path

    def config(self, token: str = TOKEN, **kw) -> Pkcs11Config:
        kw.setdefault("pin_env", PIN_ENV)
        return Pkcs11Config(module=self.module, token_label=token, **kw)


MISSING_SOFTHSM = (
    "SoftHSM2 is not installed: run 'sudo apt-get install -y softhsm2' "
    "(make test installs it when run as root; see scripts/ensure-system-deps)"
)


def require_softhsm() -> str:
    """The SoftHSM2 module path, or a test failure with one line naming the package (no traceback)."""
    try:
        module = softhsm_module()
    except KMSUnavailable:
        module = ""
    if not module or shutil.which("softhsm2-util") is None:
        pytest.fail(MISSING_SOFTHSM, pytrace=False)
    return module


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> Iterator[SoftHSM]:
    module = require_softhsm()
    # SoftHSM fsyncs every token object it writes (~0.1 s each on disk): tmpfs keeps the suite fast.
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="eventward-softhsm-", dir=shm)) if shm.is_dir() else (
        tmp_path_factory.mktemp("softhsm"))
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ[PIN_ENV] = PIN
    for label in (TOKEN, LOCKED_TOKEN):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
            check=True, capture_output=True, env=os.environ,
        )
    yield SoftHSM(module, conf)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cfg(softhsm) -> Pkcs11Config:
    """The test token, emptied: nothing a previous test made survives into this one."""
    c = softhsm.config()
    with token_session(c) as s:
        for obj in list(s.get_objects()):
            obj.destroy()
    return c


@pytest.fixture
def closing():
    """Registers KMS / KeyService objects to close at teardown, so no login outlives its test."""
    opened: list = []

    def _track(obj):
        opened.append(obj)
        return obj

    yield _track
    for obj in reversed(opened):
        with contextlib.suppress(Exception):  # some tests close theirs on purpose
            obj.close()


@pytest.fixture
def kms(cfg, closing) -> Pkcs11KMS:
    return closing(Pkcs11KMS.create(cfg))


def labels(cfg: Pkcs11Config, label: str) -> list:
    """Secret-key objects carrying ``label``, searched directly in the token."""
    with token_session(cfg) as s:
        return [o[Attribute.ID] for o in s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                         Attribute.LABEL: label})]


def make_authz() -> AllowList:
    a = AllowList()
    for action, kind in ((DECRYPT, "Class"), (ROTATE_KEYS, "Class"), (FORGET, "Subject"), (HOLD, "Subject")):
        a.grant("admin", action, (kind, "*"))
    a.grant("reader", DECRYPT, ("Class", "pii"))
    for writer in WRITERS:  # producers' principals in these tests: Encrypt on every class
        a.grant(writer, ENCRYPT, ("Class", "*"))
    return a


@pytest.fixture
def service(tmp_path, cfg, closing):
    """KeyService on the token: ``service()`` initialises the home on first call, then reopens it."""
    home = Home(tmp_path / "home")
    audit = MemoryAudit()

    def _open() -> KeyService:
        if home.keys_db.exists():
            svc = KeyService.open(home, authorizer=make_authz(), audit=audit, kms=Pkcs11KMS.open(cfg))
        else:
            svc = KeyService.init(home, authorizer=make_authz(), audit=audit, kms=Pkcs11KMS.create(cfg))
        return closing(svc)

    _open.audit = audit
    _open.home = home
    return _open


def worker(softhsm: SoftHSM, *args: str) -> subprocess.CompletedProcess:
    """Another process on the same token (its own C_Initialize, login and handles)."""
    return subprocess.run(
        [sys.executable, str(WORKER), softhsm.module, TOKEN, PIN_ENV, *args],
        capture_output=True, text=True, timeout=30, check=False, env=os.environ,
    )
