"""Findings, the checklist rules they come from, and their JSON and SARIF 2.1.0 renderings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventward.errors import ConfigError

SEVERITIES = ("low", "medium", "high", "critical")
_SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error", "critical": "error"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # configuration files are small; anything larger is not one


@dataclass(frozen=True)
class Rule:
    """One checklist item: what must hold, how bad it is when it does not, how to fix it."""

    id: str
    severity: str
    checklist: str
    title: str
    fix: str


@dataclass(frozen=True)
class Finding:
    rule: Rule
    source: str  # file path, or the URL of a live server's /varz
    line: int | None  # 1-based; None when the problem is a missing setting
    text: str  # the offending line or value ("" when missing)
    detail: str = ""

    @property
    def id(self) -> str:
        return self.rule.id

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule.id,
            "severity": self.rule.severity,
            "checklist": self.rule.checklist,
            "title": self.rule.title,
            "source": self.source,
            "line": self.line,
            "text": self.text,
            "detail": self.detail or None,
            "fix": self.rule.fix,
        }


def read_text(path: Path, kind: str) -> str:
    """A configuration file's text; ConfigError (naming the kind expected) for anything else."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is not a {kind} (larger than {MAX_CONFIG_BYTES} bytes)")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{kind} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{kind} {path} is a directory") from None
    except OSError as e:
        raise ConfigError(f"cannot read {kind} {path}: {e.strerror}") from None
    if b"\x00" in raw:
        raise ConfigError(f"{path} is not a {kind} (binary content)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a {kind} (not UTF-8 text)") from None


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: (rank[f.rule.severity], f.source, f.line or 0, f.rule.id))


def to_json(findings: Sequence[Finding], sources: Sequence[str]) -> dict[str, Any]:
    return {
        "checked": list(sources),
        "findings": [f.as_dict() for f in findings],
        "counts": {s: sum(1 for f in findings if f.rule.severity == s) for s in SEVERITIES},
    }


def to_sarif(findings: Sequence[Finding], rules: Sequence[Rule], version: str = "0") -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run: every checklist rule, and one result per finding."""
    index = {r.id: i for i, r in enumerate(rules)}
    results = []
    for f in findings:
        location: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.source)}}
        if f.line is not None:
            location["region"] = {"startLine": f.line, **({"snippet": {"text": f.text}} if f.text else {})}
        message = f.rule.title + (f" ({f.detail})" if f.detail else "") + f". Fix: {f.rule.fix}"
        result: dict[str, Any] = {
            "ruleId": f.rule.id,
            "level": _SARIF_LEVEL[f.rule.severity],
            "message": {"text": message},
            "locations": [{"physicalLocation": location}],
            "properties": {"severity": f.rule.severity, "checklist": f.rule.checklist},
        }
        if f.rule.id in index:
            result["ruleIndex"] = index[f.rule.id]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "eventward-harden",
                        "version": version,
                        "informationUri": "https://github.com/eventward/eventward",
                        "rules": [
                            {
                                "id": r.id,
                                "name": r.id.replace("-", ""),
                                "shortDescription": {"text": r.title},
                                "fullDescription": {"text": f"{r.checklist}: {r.title}"},
                                "help": {"text": r.fix},
                                "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
                                "properties": {"severity": r.severity, "checklist": r.checklist},
                            }
                            for r in rules
                        ],
                    }
                },
                "results": results,
            }
        ],
    }


def _uri(source: str) -> str:
    if "://" in source:
        return source
    p = Path(source)
    return p.resolve().as_uri() if p.is_absolute() else p.as_posix()
