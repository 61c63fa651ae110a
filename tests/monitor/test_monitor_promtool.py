"""The shipped Prometheus rules pass ``promtool check rules`` and their unit tests (``promtool
test rules``), and the rules and the Grafana dashboard only query metrics eventward exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from eventward._internal.monitor import metrics

MON = Path(__file__).resolve().parents[2] / "monitoring"
NAME = re.compile(r"\beventward_[a-z_]+")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: scripts/ensure-system-deps installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False, cwd=MON)


def test_promtool_check_and_unit_test_rules() -> None:
    r = _promtool("check", "rules", "prometheus-rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    r = _promtool("test", "rules", "prometheus-rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported() -> set[str]:
    """Every series name the registry can expose (families with no child yet included)."""
    names = set()
    for fam in metrics.REGISTRY.collect():
        names.update(fam.name + suffix for suffix in SUFFIXES[fam.type])
    parsed = {s.name for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples}
    assert parsed <= names  # what is rendered is a subset of the declared families
    return names


def test_rules_and_dashboard_query_only_exported_metrics() -> None:
    exported = _exported()
    rules = (MON / "prometheus-rules.yml").read_text()
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(NAME.findall(rules)) | {n for e in exprs for n in NAME.findall(e)}
    assert len(used) >= 12
    assert used <= exported, sorted(used - exported)
    assert dash["uid"] == "eventward-security" and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
