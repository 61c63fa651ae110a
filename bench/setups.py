"""What each benchmark scenario runs on: the deployed configuration, or a labelled ablation.

Issue 16: the README's table may only claim what a user runs. "deployed" means a home made as
``eventward init`` + the example policy (src/eventward/_internal/examples/policy.yaml) make it:
Cedar policy engine, audit log, KeyService with keys.db and the local KMS, the schema registry
and the trust registry (bench/deployed.py). Every other scenario is an ablation: a component
alone, the SDK's lighter wiring, or the deployed wiring under a policy of the benchmark's own;
its label says which. The report puts deployed scenarios in the first table and ablations,
labelled, in a second one.

One list, reviewed in one place, instead of a keyword in every bench module: a new scenario
whose name matches no entry is reported as "setup not declared", never as deployed.
"""

from __future__ import annotations

DEPLOYED = "deployed"
UNDECLARED = "ablation? setup not declared in bench/setups.py"
_OWN_POLICY = "ablation: deployed wiring (Cedar, audit, KeyService + local KMS) under the bench's own policy"

# area -> [(scenario name prefix, setup)], first match wins.
SETUPS: dict[str, list[tuple[str, str]]] = {
    "fields": [("", "ablation: FieldEncryptor alone, in-memory keys (deployed keys: the anchor rows)")],
    "anchors": [("anchor:", DEPLOYED)],
    "keys": [
        ("forget -> all", f"{_OWN_POLICY} (forget + consumer-group acknowledgements)"),
        ("key", "ablation: KeyService alone (keys.db + local KMS, allow-list, no audit)"),
    ],
    "keys_hsm": [("", "ablation: KMS and KeyService alone, SoftHSM2 vs the local KMS (allow-list, no audit)")],
    "schema": [("", "ablation: registry validator alone (allow-list registry, in-memory keys)")],
    "policy": [("", "ablation: policy engine alone (Cedar)")],
    "seals": [("", "ablation: seal sign/verify alone")],
    "audit": [("", "ablation: audit log alone")],
    "e2e": [
        ("e2e_embedded ablation", "ablation: SDK wiring (in-memory keys, allow-list authorizer, no audit log)"),
        ("e2e_embedded", DEPLOYED),
        ("seal_verify", "ablation: seal verifier alone"),
    ],
    "nats": [
        ("nats append", "ablation: NATS transport alone"),
        ("nats read", "ablation: NATS transport alone"),
        ("nats produce", f"{DEPLOYED} (NATS transport)"),
        ("nats e2e", f"{DEPLOYED} (NATS transport)"),
    ],
    "gateway": [("", f"{DEPLOYED} (eventward serve, mTLS)")],
    "memory": [("", DEPLOYED)],
    "scaling": [("", DEPLOYED)],
    "guard": [
        ("guard_scan", "ablation: scanner alone"),
        ("guard_", f"{_OWN_POLICY} (guard modes per topic)"),
    ],
    "control": [
        ("client-mode key cache", "ablation: RemoteKeys cache over a counting stand-in of the control API"),
        ("client-mode", f"{DEPLOYED} (client mode: the control plane is `eventward serve` in its own "
                        "process, over mTLS, reconciler and monitor on)"),
    ],
    "monitor": [("", f"{_OWN_POLICY} (monitoring on vs off)")],
    "store": [("", "ablation: key store and audit log alone, PostgreSQL vs SQLite")],
    "partitions": [
        ("e2e_partitions over NATS", f"{DEPLOYED} (+ topic partitions, NATS transport)"),
        ("", f"{DEPLOYED} (+ topic partitions)"),
    ],
    "replicas": [("", f"{DEPLOYED} (store: postgres, eventward serve x1 vs x2, client mode over mTLS)")],
}


def setup_of(area: str | None, name: str) -> str:
    """The declared setup of scenario ``name`` of ``area``, else UNDECLARED."""
    for prefix, setup in SETUPS.get(area or "", []):
        if name.startswith(prefix):
            return setup
    return UNDECLARED


def is_deployed(setup: str) -> bool:
    return setup == DEPLOYED or setup.startswith(f"{DEPLOYED} (")
