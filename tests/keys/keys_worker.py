"""A second process for the key-service tests (run as a script: not collected by pytest).

watch HOME KID CLS    cache the DEK, serve it once from the cache, print "ready", then poll
                      until KeyDestroyed; print the time seen
race HOME AT N        at wall-clock AT + i*0.1 create the first pii DEK of subject-i; print the kids
create HOME N PREFIX  create pii DEKs for PREFIX-0..N-1, printing "started" after the first;
                      print how many
rotate HOME N         rotate the pii KEK N times through the keyring alone
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_authz
from eventward._internal.home import Home
from eventward._internal.keys.kms.local import LocalKMS
from eventward._internal.keys.service import KeyService
from eventward.errors import KeyDestroyed


def main(cmd: str, home_dir: str, *args: str) -> int:
    home = Home(Path(home_dir))
    if cmd == "rotate":
        kms = LocalKMS.open(home.keyring, master_key_path=home.master_key)
        for _ in range(int(args[0])):
            kms.rotate("pii")
        print(kms.current("pii"))
        return 0
    with KeyService.open(home, authorizer=make_authz()) as svc:
        if cmd == "watch":
            kid, cls = args
            svc.decryption_key(kid, cls, principal="admin")
            svc.decryption_key(kid, cls, principal="admin")  # now served from the cache
            print("ready", flush=True)
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    svc.decryption_key(kid, cls, principal="admin")
                except KeyDestroyed:
                    print(repr(time.time()), flush=True)
                    return 0
                time.sleep(0.001)
            return 3
        if cmd == "race":
            at, n = float(args[0]), int(args[1])
            kids = []
            for i in range(n):
                while time.time() < at + i * 0.1:
                    pass
                kids.append(svc.encryption_key(f"subject-{i}", "pii", principal="producer")[0])
            print(json.dumps(kids))
            return 0
        if cmd == "create":
            n, prefix = int(args[0]), args[1]
            for i in range(n):
                svc.encryption_key(f"{prefix}-{i}", "pii", principal="producer")
                if i == 0:
                    print("started", flush=True)
            print(n)
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
