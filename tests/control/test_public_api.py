"""The public API fits one screen: what a user needs, and nothing that makes `import eventward` heavy."""

from __future__ import annotations

import subprocess
import sys

import eventward


def test_public_names_resolve_and_are_documented():
    for name in eventward.__all__:
        assert getattr(eventward, name) is not None, name
    assert len(eventward.__all__) <= 15
    assert issubclass(eventward.errors.ControlPlaneUnavailable, eventward.errors.KMSUnavailable)


def test_import_stays_light():
    code = "import sys, eventward; print(sorted(m for m in sys.modules if m.startswith('eventward')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "eventward._internal.deployment" not in out and "eventward._internal.control" not in out, out
