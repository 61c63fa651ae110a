"""Kafka broker ``server.properties`` against the usual hardening checklist.

Checked from the file alone: listeners and inter-broker/controller traffic on TLS, client
authentication, an authorizer with no ``allow.everyone.if.no.acl.found``, no anonymous super
user, no auto-created topics, size and connection limits, ZooKeeper ACLs and TLS, hostname
verification, TLS versions, unclean leader election, and JMX authentication when its
``com.sun.management.jmxremote.*`` properties are in the file. Quotas are dynamic broker
configuration (``kafka-configs``), not ``server.properties``, so they are out of reach here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from eventward._internal.harden.findings import Finding, Rule, read_text
from eventward.errors import ConfigError

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
PLAINTEXT_PROTOCOLS = {"PLAINTEXT", "SASL_PLAINTEXT"}
_KNOWN = {
    "broker.id", "node.id", "listeners", "advertised.listeners", "process.roles", "zookeeper.connect",
    "log.dirs", "log.dir", "controller.quorum.voters", "controller.listener.names", "num.partitions",
    "listener.security.protocol.map", "authorizer.class.name", "security.inter.broker.protocol",
}

R = {
    r.id: r
    for r in (
        Rule("KAFKA-001", "high", "No PLAINTEXT listeners",
             "a client listener carries traffic without TLS",
             "use SSL or SASL_SSL for every listener (listeners=SSL://..., listener.security.protocol.map)"),
        Rule("KAFKA-002", "high", "TLS between brokers",
             "inter-broker traffic is not encrypted",
             "security.inter.broker.protocol=SSL (or inter.broker.listener.name naming an SSL/SASL_SSL listener)"),
        Rule("KAFKA-003", "high", "Authentication on",
             "a TLS listener does not require client certificates and no SASL authenticates clients",
             "ssl.client.auth=required, or SASL_SSL listeners with sasl.enabled.mechanisms=SCRAM-SHA-512"),
        Rule("KAFKA-004", "high", "Authorization on",
             "no authorizer is configured: every authenticated client may do everything",
             "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer (KRaft) "
             "or kafka.security.authorizer.AclAuthorizer (ZooKeeper)"),
        Rule("KAFKA-005", "critical", "No allow.everyone.if.no.acl.found",
             "resources without ACLs are open to everyone",
             "allow.everyone.if.no.acl.found=false (the default); grant with ACLs instead"),
        Rule("KAFKA-006", "medium", "No auto-created topics",
             "topics are created on first use by any client (the default is true)",
             "auto.create.topics.enable=false; create topics deliberately"),
        Rule("KAFKA-007", "medium", "Size limits",
             f"message.max.bytes allows batches over {MAX_MESSAGE_BYTES} bytes",
             f"message.max.bytes={MAX_MESSAGE_BYTES} or less"),
        Rule("KAFKA-008", "low", "Connection quotas",
             "max.connections.per.ip is unlimited: one address can exhaust the broker's connections",
             "max.connections.per.ip=1000 (or what your clients need)"),
        Rule("KAFKA-009", "critical", "No anonymous super users",
             "super.users names ANONYMOUS or a wildcard, which bypasses every ACL",
             "super.users lists only named operator principals (User:CN=kafka-admin)"),
        Rule("KAFKA-010", "high", "Authenticated JMX",
             "remote JMX runs without authentication or TLS",
             "com.sun.management.jmxremote.authenticate=true and com.sun.management.jmxremote.ssl=true"),
        Rule("KAFKA-011", "high", "Restricted ZooKeeper/KRaft",
             "the metadata quorum (ZooKeeper or the KRaft controller listener) is reachable without "
             "TLS or ACLs",
             "ZooKeeper: zookeeper.set.acl=true and zookeeper.ssl.client.enable=true; KRaft: map "
             "controller.listener.names to SSL"),
        Rule("KAFKA-012", "medium", "Hostname verification",
             "ssl.endpoint.identification.algorithm is empty: peers' certificates are not checked "
             "against their host names",
             "ssl.endpoint.identification.algorithm=https (the default)"),
        Rule("KAFKA-013", "medium", "Modern TLS only",
             "ssl.enabled.protocols allows TLS 1.0/1.1 or SSL",
             "ssl.enabled.protocols=TLSv1.3,TLSv1.2"),
        Rule("KAFKA-014", "medium", "No unclean leader election",
             "unclean.leader.election.enable=true lets an out-of-sync replica lead and lose acknowledged events",
             "unclean.leader.election.enable=false (the default)"),
    )
}
RULES = list(R.values())


@dataclass(frozen=True)
class Prop:
    value: str
    line: int
    text: str


def parse_properties(text: str, source: str) -> dict[str, Prop]:
    """Java .properties (as Kafka reads them): comments, ``=``/``:``/space separators, ``\\``
    continuations. The last occurrence of a key wins, as in java.util.Properties."""
    out: dict[str, Prop] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start, raw = i + 1, lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped[0] in "#!":
            continue
        logical = stripped
        while logical.endswith("\\") and not logical.endswith("\\\\") and i < len(lines):
            logical = logical[:-1] + lines[i].strip()
            i += 1
        m = re.match(r"((?:[^=:\s\\]|\\.)+)\s*[=:\s]\s*(.*)\Z", logical)
        key, value = (m.group(1), m.group(2)) if m else (logical, "")
        out[key.replace("\\", "")] = Prop(value.strip(), start, raw.rstrip())
    known = _KNOWN & set(out)
    if not known:
        raise ConfigError(
            f"{source} is not a Kafka server.properties (none of broker.id, node.id, listeners, "
            "process.roles, zookeeper.connect, log.dirs is set)"
        )
    return out


def _listeners(props: dict[str, Prop]) -> list[tuple[str, str, Prop]]:
    """(listener name, its security protocol, the property naming it)."""
    proto_map: dict[str, str] = {}
    if "listener.security.protocol.map" in props:
        for item in props["listener.security.protocol.map"].value.split(","):
            if ":" in item:
                name, proto = item.split(":", 1)
                proto_map[name.strip().upper()] = proto.strip().upper()
    out = []
    for key in ("listeners", "advertised.listeners"):
        if key not in props:
            continue
        for item in props[key].value.split(","):
            m = re.match(r"\s*([A-Za-z0-9_]+)://", item)
            if m:
                name = m.group(1).upper()
                # The line to fix is the one that gives the listener its protocol.
                mapped = name in proto_map
                out.append((name, proto_map.get(name, name),
                            props["listener.security.protocol.map"] if mapped else props[key]))
    return out


def check_properties(text: str, source: str) -> list[Finding]:
    props = parse_properties(text, source)
    found: list[Finding] = []

    def hit(rule: str, prop: Prop | None, detail: str = "") -> None:
        found.append(Finding(R[rule], source, prop.line if prop else None, prop.text if prop else "", detail))

    def val(key: str, default: str = "") -> str:
        return props[key].value.strip().lower() if key in props else default

    listeners = _listeners(props)
    controllers = {n.strip().upper() for n in val("controller.listener.names").split(",") if n.strip()}
    seen: set[str] = set()
    for name, proto, prop in listeners:
        if proto in PLAINTEXT_PROTOCOLS and name not in seen:
            seen.add(name)
            hit("KAFKA-011" if name in controllers else "KAFKA-001", prop, f"listener {name} is {proto}")
    protocols = {proto for name, proto, _ in listeners if name not in controllers}
    ibl = val("inter.broker.listener.name").upper()
    inter = next((p for n, p, _ in listeners if n == ibl), None) if ibl else None
    if inter is None:
        inter = val("security.inter.broker.protocol", "plaintext").upper()
    if inter in PLAINTEXT_PROTOCOLS and "listeners" in props:
        hit("KAFKA-002", props.get("security.inter.broker.protocol") or props.get("inter.broker.listener.name"),
            f"inter-broker protocol {inter}")
    if "SSL" in protocols and val("ssl.client.auth", "none") != "required":
        hit("KAFKA-003", props.get("ssl.client.auth"), "SSL listener without ssl.client.auth=required")
    if not val("authorizer.class.name"):
        hit("KAFKA-004", props.get("authorizer.class.name"))
    if val("allow.everyone.if.no.acl.found") == "true":
        hit("KAFKA-005", props["allow.everyone.if.no.acl.found"])
    if val("auto.create.topics.enable", "true") != "false":
        hit("KAFKA-006", props.get("auto.create.topics.enable"))
    try:
        if int(val("message.max.bytes", "1048588")) > MAX_MESSAGE_BYTES:
            hit("KAFKA-007", props["message.max.bytes"])
    except ValueError:
        hit("KAFKA-007", props["message.max.bytes"], "not a number")
    if "max.connections.per.ip" not in props:
        hit("KAFKA-008", None)
    supers = [s.strip() for s in props["super.users"].value.split(";")] if "super.users" in props else []
    if any(s.upper() in ("USER:ANONYMOUS", "USER:*", "*") for s in supers):
        hit("KAFKA-009", props["super.users"])
    for key in ("com.sun.management.jmxremote.authenticate", "com.sun.management.jmxremote.ssl"):
        if val(key) == "false":
            hit("KAFKA-010", props[key])
    if "zookeeper.connect" in props:
        if val("zookeeper.set.acl") != "true":
            hit("KAFKA-011", props.get("zookeeper.set.acl") or props["zookeeper.connect"], "zookeeper.set.acl not true")
        if val("zookeeper.ssl.client.enable") != "true":
            hit("KAFKA-011", props.get("zookeeper.ssl.client.enable") or props["zookeeper.connect"],
                "ZooKeeper client connection without TLS")
    if "ssl.endpoint.identification.algorithm" in props and not val("ssl.endpoint.identification.algorithm"):
        hit("KAFKA-012", props["ssl.endpoint.identification.algorithm"])
    weak = {"tlsv1", "tlsv1.1", "sslv3", "ssl"}
    if {p.strip().lower() for p in val("ssl.enabled.protocols").split(",")} & weak:
        hit("KAFKA-013", props["ssl.enabled.protocols"])
    if val("unclean.leader.election.enable") == "true":
        hit("KAFKA-014", props["unclean.leader.election.enable"])
    return found


def check_file(path: Path) -> list[Finding]:
    return check_properties(read_text(path, "Kafka server.properties"), str(path))
