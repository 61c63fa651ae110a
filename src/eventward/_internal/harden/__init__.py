"""``eventward harden``: check broker and eventward configurations against a hardening checklist.

Each checker turns one configuration (Kafka ``server.properties``, a NATS server config or a
live NATS server's ``/varz``, eventward's own ``eventward.yaml``) into :class:`Finding` s: a
stable id, a severity, the checklist item it maps to, where it is (file and line, or the
``/varz`` field), the offending text and the fix. Reports render as a table, ``--json`` or
SARIF 2.1.0 for code-scanning tools. A file that is not the kind of configuration it was
given as is a ConfigError, never an empty (passing) report.
"""

from __future__ import annotations

from eventward._internal.harden.findings import SEVERITIES, Finding, Rule, to_json, to_sarif

__all__ = ["SEVERITIES", "Finding", "Rule", "to_json", "to_sarif"]
