"""PKCS#11 KMS on SoftHSM2: what moving the KEKs into a token costs, against the local keyring.

    python -m bench.bench_keys_hsm [--quick]

wrap / unwrap: Pkcs11KMS (CKM_AES_GCM inside the token) against LocalKMS (AES-GCM in process) and
against bare python-pkcs11 GCM calls on the same key (this module's own overhead).
subject hash: CKM_SHA256_HMAC in the token with and without the memo, against the local HMAC.
KeyService: uncached decryption_key (store read + unwrap) and first encryption_key of new subjects
(HMAC + wrap + store insert), PKCS#11 against local. Needs softhsm2 installed (apt-get install softhsm2).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pkcs11 import GCMParams, Mechanism

from bench.common import print_scenario, rate, scenario
from bench.subjects import load
from eventward._internal.home import Home
from eventward._internal.keys.kms.base import MAC_SUBJECT
from eventward._internal.keys.kms.local import LocalKMS
from eventward._internal.keys.kms.pkcs11 import Pkcs11Config, Pkcs11KMS, softhsm_module, token_session
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward._internal.policy.base import DECRYPT, ENCRYPT, AllowList

TOKEN = "eventward-bench"
PIN_ENV = "EVENTWARD_BENCH_HSM_PIN"
_state: dict[str, Pkcs11Config] = {}


def _token() -> Pkcs11Config:
    """One private token per process: SoftHSM lists tokens once, at its first C_Initialize."""
    if "cfg" not in _state:
        shm = Path("/dev/shm")
        root = Path(tempfile.mkdtemp(prefix="ew-bench-softhsm-", dir=shm if shm.is_dir() else None))
        atexit.register(shutil.rmtree, root, True)
        (root / "tokens").mkdir()
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        os.environ.setdefault(PIN_ENV, os.urandom(8).hex())
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", os.environ[PIN_ENV],
             "--so-pin", os.urandom(8).hex()],
            check=True, capture_output=True,
        )
        _state["cfg"] = Pkcs11Config(module=softhsm_module(), token_label=TOKEN, pin_env=PIN_ENV)
    cfg = _state["cfg"]
    with token_session(cfg) as s:
        for obj in list(s.get_objects()):
            obj.destroy()
    return cfg


def _authz() -> AllowList:
    return AllowList([("admin", DECRYPT, ("Class", "*")), ("p", ENCRYPT, ("Class", "*"))])


def _kms_scenarios(
    raw: Any, hsm: Pkcs11KMS, nomemo: Pkcs11KMS, local: LocalKMS, n: int
) -> list[dict[str, Any]]:
    dek, aad = os.urandom(32), os.urandom(60)
    kid, blob = hsm.wrap("pii", dek, aad)
    lkid, lblob = local.wrap("pii", dek, aad)
    key = raw.get_key(label="pii.v1")  # the same token key, driven through python-pkcs11 directly
    iv = os.urandom(12)
    raw_ct = key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad, 128))

    def loop(fn: Any) -> Any:
        def body() -> int:
            for _ in range(n):
                fn()
            return n
        return body

    def raw_encrypt() -> None:
        key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(os.urandom(12), aad, 128))

    def raw_decrypt() -> None:
        key.decrypt(raw_ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad, 128))

    subjects = [f"subject-{i}".encode() for i in range(max(10, n // 20))]

    def hashes(kms: Any) -> Any:
        def body() -> int:
            for i in range(n):
                kms.mac(MAC_SUBJECT, subjects[i % len(subjects)])
            return n
        return body

    hashes(hsm)()  # warm the memo: the scenario measures the steady state of a repeat-heavy stream
    return [
        scenario("keys_hsm wrap (CKM_AES_GCM in SoftHSM2)", rate(loop(lambda: hsm.wrap("pii", dek, aad))), {
            "LocalKMS wrap (AES-GCM in process)": rate(loop(lambda: local.wrap("pii", dek, aad))),
            "bare python-pkcs11 C_Encrypt": rate(loop(raw_encrypt)),
        }, unit="wraps/s"),
        scenario("keys_hsm unwrap (CKM_AES_GCM in SoftHSM2)", rate(loop(lambda: hsm.unwrap(kid, blob, aad))),
                 {
            "LocalKMS unwrap (AES-GCM in process)": rate(loop(lambda: local.unwrap(lkid, lblob, aad))),
            "bare python-pkcs11 C_Decrypt": rate(loop(raw_decrypt)),
        }, unit="unwraps/s"),
        scenario("keys_hsm subject hash (token HMAC + memo)", rate(hashes(hsm)), {
            "token CKM_SHA256_HMAC, memo off": rate(hashes(nomemo)),
            "LocalKMS HMAC (in process)": rate(hashes(local)),
        }, unit="hashes/s", distinct_subjects=len(subjects)),
    ]


def _service_scenarios(root: Path, cfg: Pkcs11Config, n: int) -> list[dict[str, Any]]:
    off = KeyServiceConfig(cache_max=0)
    homes = {"hsm": Home(root / "hsm"), "local": Home(root / "local")}
    kids: dict[str, list[str]] = {}
    for name, home in homes.items():
        kms = Pkcs11KMS.create(cfg) if name == "hsm" else None
        with KeyService.init(home, authorizer=_authz(), config=off, kms=kms) as svc:  # wrapped by its own KMS
            kids[name] = [k.kid for chunk in load(svc, (f"s{i}" for i in range(n)), ("pii",)) for k in chunk]
    out = []
    svcs = {
        "hsm": KeyService.open(homes["hsm"], authorizer=_authz(), config=off, kms=Pkcs11KMS.open(cfg)),
        "local": KeyService.open(homes["local"], authorizer=_authz(), config=off),
    }
    try:
        def decrypt(name: str) -> Any:
            def body() -> int:
                for kid in kids[name]:
                    svcs[name].decryption_key(kid, "pii", principal="admin")
                return n
            return body

        fresh = iter(range(10**9))

        creates = max(1, n // 4)  # two fsync'd transactions each: a quarter gives the same rate

        def create(name: str) -> Any:
            def body() -> int:
                for _ in range(creates):
                    svcs[name].encryption_key(f"new-{next(fresh)}", "payment", principal="p")
                return creates
            return body

        out.append(scenario("keys_hsm KeyService decryption_key, cache off", rate(decrypt("hsm")),
                            {"same on LocalKMS": rate(decrypt("local"))}, unit="calls/s"))
        out.append(scenario("keys_hsm KeyService new-subject encryption_key", rate(create("hsm")),
                            {"same on LocalKMS": rate(create("local"))}, unit="calls/s"))
    finally:
        for svc in svcs.values():
            svc.close()
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 300 if quick else 5_000
    cfg = _token()
    with tempfile.TemporaryDirectory(prefix="ew-bench-keys-hsm-") as tmp:
        root = Path(tmp)
        (root / "k").mkdir()
        local = LocalKMS.create(root / "k" / "keyring.bin", master_key_path=root / "k" / "master.key")
        hsm = Pkcs11KMS.create(cfg)
        nomemo = Pkcs11KMS.open(replace(cfg, mac_cache=0))
        try:
            with token_session(cfg) as raw:
                results = _kms_scenarios(raw, hsm, nomemo, local, n)
        finally:
            for k in (nomemo, hsm, local):
                k.close()
        _token()  # empty again for the services' own create
        results += _service_scenarios(root, cfg, 30 if quick else 2_000)
    return results


def main() -> None:
    for res in run(quick="--quick" in sys.argv[1:]):
        print_scenario(res)


if __name__ == "__main__":
    main()
