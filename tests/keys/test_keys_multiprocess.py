"""Two processes creating the first DEK of the same subjects at the same instant converge."""

from __future__ import annotations

import json
import time

from .conftest import spawn


def test_concurrent_first_use_converges_on_one_key(svc, home):
    n = 12
    at = time.time() + 2.0  # both workers are up by then and fire together
    procs = [spawn("race", str(home.root), repr(at), str(n)) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0] == results[1]
    assert len(set(results[0])) == n
    for i, kid in enumerate(results[0]):
        assert svc.encryption_key(f"subject-{i}", "pii", principal="p")[0] == kid
    rows = svc.store._db.execute("SELECT count(*) FROM deks WHERE class='pii'").fetchone()[0]
    assert rows == n
