"""Run one KMS operation on the test token from a separate process.

    hsm_worker.py MODULE TOKEN PIN_ENV unwrap KID WRAPPED_HEX AAD_HEX   -> prints the DEK as hex
    hsm_worker.py MODULE TOKEN PIN_ENV destroy KID
    hsm_worker.py MODULE TOKEN PIN_ENV rotate CLASS                     -> prints the new KEK id
Typed errors print as ``error <code>`` with exit status 3.
"""

from __future__ import annotations

import sys

from eventward._internal.keys.kms.pkcs11 import Pkcs11Config, Pkcs11KMS
from eventward.errors import EventwardError


def main(argv: list[str]) -> int:
    module, token, pin_env, op, *args = argv
    kms = Pkcs11KMS.open(Pkcs11Config(module=module, token_label=token, pin_env=pin_env))
    try:
        if op == "unwrap":
            print(kms.unwrap(args[0], bytes.fromhex(args[1]), bytes.fromhex(args[2])).hex())
        elif op == "destroy":
            kms.destroy(args[0])
        elif op == "rotate":
            print(kms.rotate(args[0]))
        else:
            raise SystemExit(f"unknown op {op}")
    except EventwardError as e:
        print(f"error {e.code}")
        return 3
    finally:
        kms.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
