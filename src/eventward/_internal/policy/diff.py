"""The broker delta between two policy versions, computed from the broker compilers' own outputs.

``eventward policy diff V1 V2`` answers "what do I run on the brokers to go from V1 to V2":
the Kafka ACL lines V2 adds and the ones it drops (as ``kafka-acls.sh --remove`` lines), and
per NATS user the subjects that enter or leave each publish/subscribe allow/deny list. It
compares what ``compile_kafka``/``compile_nats`` print, so the diff can never disagree with
``policy compile``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from eventward.errors import PolicyError

ADD = "--add"
REMOVE = "--remove"


@dataclass(frozen=True)
class KafkaDelta:
    """Lines to run, in a safe order: new denies, then dropped allows are removed, then new allows
    are added, then dropped denies are removed, so no moment grants more than V1 or V2 does."""

    add: tuple[str, ...]
    remove: tuple[str, ...]

    def script(self) -> list[str]:
        deny = [x for x in self.add if _is_deny(x)]
        allow = [x for x in self.add if not _is_deny(x)]
        rm_allow = [x for x in self.remove if not _is_deny(x)]
        rm_deny = [x for x in self.remove if _is_deny(x)]
        return [*deny, *rm_allow, *allow, *rm_deny]


@dataclass(frozen=True)
class NatsUserDelta:
    """One NATS user's permission changes; ``added``/``removed`` map e.g. ``publish.allow`` to subjects."""

    user: str
    change: str  # "added", "removed" or "changed"
    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)


def _acl_lines(script: str) -> list[str]:
    out = []
    for line in script.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            words = shlex.split(s)
        except ValueError:
            continue
        if words and words[0].rsplit("/", 1)[-1].startswith("kafka-acls") and ADD in words:
            out.append(s)
    return out


def _is_deny(line: str) -> bool:
    return "--deny-principal" in line.split()


def _as_remove(line: str) -> str:
    """The same ACL as a removal; ``--force`` because kafka-acls.sh asks for confirmation otherwise."""
    words = line.split(" ")
    i = words.index(ADD)
    return " ".join([*words[:i], REMOVE, "--force", *words[i + 1 :]])


def kafka_delta(old_script: str, new_script: str) -> KafkaDelta:
    """ACL lines only in the new script (to add) and only in the old one (to remove)."""
    old, new = _acl_lines(old_script), _acl_lines(new_script)
    old_set, new_set = set(old), set(new)
    return KafkaDelta(
        add=tuple(x for x in new if x not in old_set),
        remove=tuple(_as_remove(x) for x in old if x not in new_set),
    )


def _nats_users(config: str) -> dict[str, dict[str, list[str]]]:
    """``user -> {"publish.allow": [...], ...}`` from a compiled ``authorization`` block."""
    users: dict[str, dict[str, list[str]]] = {}
    for line in config.splitlines():
        s = line.strip().rstrip(",")
        if not s.startswith("{"):
            continue
        try:
            u = json.loads(s)
        except ValueError:
            raise PolicyError("compiled NATS authorization has a user entry that is not JSON") from None
        if not isinstance(u, dict) or not isinstance(u.get("user"), str):
            continue
        perms: dict[str, list[str]] = {}
        for direction, lists in (u.get("permissions") or {}).items():
            for kind, subjects in (lists or {}).items():
                perms[f"{direction}.{kind}"] = list(subjects)
        users[u["user"]] = perms
    return users


def nats_delta(old_config: str, new_config: str) -> list[NatsUserDelta]:
    """Per user, the subjects that enter or leave each permission list."""
    old, new = _nats_users(old_config), _nats_users(new_config)
    out: list[NatsUserDelta] = []
    for user in sorted(old.keys() | new.keys()):
        a, b = old.get(user), new.get(user)
        keys = sorted((a or {}).keys() | (b or {}).keys())
        added = {k: [s for s in (b or {}).get(k, []) if s not in (a or {}).get(k, [])] for k in keys}
        removed = {k: [s for s in (a or {}).get(k, []) if s not in (b or {}).get(k, [])] for k in keys}
        added = {k: v for k, v in added.items() if v}
        removed = {k: v for k, v in removed.items() if v}
        if a is None:
            out.append(NatsUserDelta(user, "added", added, {}))
        elif b is None:
            out.append(NatsUserDelta(user, "removed", {}, removed))
        elif added or removed:
            out.append(NatsUserDelta(user, "changed", added, removed))
    return out


def nats_lines(deltas: list[NatsUserDelta]) -> list[str]:
    """Readable lines: ``+ user orders-svc publish.allow ew.orders``."""
    lines = []
    for d in deltas:
        if d.change != "changed":
            lines.append(f"{'+' if d.change == 'added' else '-'} user {d.user}")
        for sign, part in (("-", d.removed), ("+", d.added)):
            for key, subjects in part.items():
                lines.extend(f"{sign} user {d.user} {key} {s}" for s in subjects)
    return lines


def notes_delta(old_text: str, new_text: str) -> dict[str, list[str]]:
    """The compilers' ``#`` notes (what eventward enforces because the broker cannot) that appear
    or disappear; header comments are the same in both, so they cancel out."""
    def notes(text: str) -> list[str]:
        return [x[1:].strip() for x in text.splitlines() if x.startswith("# ") and not x.startswith("# ---")]

    old, new = notes(old_text), notes(new_text)
    return {"added": [x for x in new if x not in set(old)], "removed": [x for x in old if x not in set(new)]}


def delta_json(
    kafka: KafkaDelta | None,
    nats: list[NatsUserDelta] | None,
    notes: dict[str, dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """The stable --json body (docs/cli.md)."""
    doc: dict[str, Any] = {"notes": notes or {}}
    if kafka is not None:
        doc["kafka"] = {"add": list(kafka.add), "remove": list(kafka.remove), "script": kafka.script()}
    if nats is not None:
        doc["nats"] = [
            {"user": d.user, "change": d.change, "added": d.added, "removed": d.removed} for d in nats
        ]
    return doc
