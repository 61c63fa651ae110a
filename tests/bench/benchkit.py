"""Shared by the benchmark harness tests: the repository root on the path, synthetic results.

No ``__init__.py`` in this directory on purpose: it would make it the package ``bench`` and
shadow the real bench/ package at the repository root, which is put on the path here instead
(``python -m bench.run`` has it there).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import scenario  # noqa: E402


def curve_scenario(name: str = "scaling: batch size") -> dict[str, Any]:
    return scenario(
        name,
        {"median": 2_000.0, "min": 1_500.0, "max": 2_100.0},
        {"plain | json": {"median": 4_000.0, "min": 3_900.0, "max": 4_100.0}},
        curve={
            "x_label": "batch",
            "y_label": "events/s",
            "log_x": True,
            "series": {"eventward": [[1, 500.0], [10, 1_500.0], [500, 2_000.0]], "plain": [[1, 900.0], [500, 4_000.0]]},
        },
    )


def results_doc() -> dict[str, Any]:
    """A results document as bench.run writes it, with one plain and one curve scenario."""
    return {
        "quick": False,
        "machine": {"python": "3.11.7", "machine": "x86_64", "processor": "x86_64", "cpus": 2, "system": "Linux"},
        "started": "2026-01-01T00:00:00Z",
        "seconds": 1.0,
        "load_average": {"before": [0.5, 0.4, 0.3], "after": [0.6, 0.5, 0.4]},
        "scenarios": [
            scenario("seal_verify", {"median": 90_000.0, "min": 80_000.0, "max": 95_000.0},
                     {"per_event_ed25519_verify": {"median": 4_500.0, "min": 4_400.0, "max": 4_600.0}},
                     summary="one signature per batch"),
            curve_scenario(),
        ],
        "failed_areas": [],
    }
