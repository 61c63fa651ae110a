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


def test_everything_but_the_api_is_visibly_internal():
    from pathlib import Path

    top = {p.name for p in Path(eventward.__file__).parent.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "errors.py", "py.typed", "_internal"}, sorted(top)


def test_readme_python_examples_use_only_the_public_api():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = readme.split("```python")[1:]
    assert blocks, "the README shows Python usage"
    for block in blocks:
        code = block.split("```")[0]
        assert "_internal" not in code, code
