"""The checker's test corpus: good Kafka/NATS configurations and, per checklist item, a bad one
made from a good one by planting exactly that misconfiguration."""

from __future__ import annotations

import re

KAFKA_KRAFT = """\
# KRaft broker+controller, TLS everywhere
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka1:9093
listeners=SSL://:9092,CONTROLLER://:9093
advertised.listeners=SSL://kafka1:9092
listener.security.protocol.map=SSL:SSL,CONTROLLER:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=SSL
ssl.client.auth=required
ssl.keystore.location=/etc/kafka/tls/kafka1.p12
ssl.truststore.location=/etc/kafka/tls/ca.p12
ssl.enabled.protocols=TLSv1.3,TLSv1.2
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:CN=kafka-admin
auto.create.topics.enable=false
message.max.bytes=1048588
max.connections.per.ip=1000
unclean.leader.election.enable=false
log.dirs=/var/lib/kafka/data
"""

KAFKA_ZK = """\
broker.id=0
zookeeper.connect=zk1:2182,zk2:2182/kafka
zookeeper.set.acl=true
zookeeper.ssl.client.enable=true
zookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty
listeners=SASL_SSL://:9093
security.inter.broker.protocol=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
authorizer.class.name=kafka.security.authorizer.AclAuthorizer
super.users=User:kafka-admin;User:CN=ops
auto.create.topics.enable=false
max.connections.per.ip=500
com.sun.management.jmxremote.authenticate=true
com.sun.management.jmxremote.ssl=true
log.dirs=/var/lib/kafka
"""


def _set(text: str, key: str, value: str | None) -> str:
    """``text`` with ``key`` set to ``value`` (None: removed), appended when absent."""
    pattern = re.compile(rf"^{re.escape(key)}=.*$", re.M)
    if value is None:
        return pattern.sub("", text)
    if pattern.search(text):
        return pattern.sub(f"{key}={value}", text)
    return text + f"{key}={value}\n"


# checklist id -> (base, key, planted value); exactly that finding is expected.
KAFKA_BAD = {
    "KAFKA-001": (KAFKA_KRAFT, "listeners", "PLAINTEXT://:9094,SSL://:9092,CONTROLLER://:9093"),
    "KAFKA-002": (_set(KAFKA_KRAFT, "inter.broker.listener.name", None), "security.inter.broker.protocol",
                  "PLAINTEXT"),
    "KAFKA-003": (KAFKA_KRAFT, "ssl.client.auth", "requested"),
    "KAFKA-004": (KAFKA_KRAFT, "authorizer.class.name", None),
    "KAFKA-005": (KAFKA_KRAFT, "allow.everyone.if.no.acl.found", "true"),
    "KAFKA-006": (KAFKA_KRAFT, "auto.create.topics.enable", None),
    "KAFKA-007": (KAFKA_KRAFT, "message.max.bytes", "104857600"),
    "KAFKA-008": (KAFKA_KRAFT, "max.connections.per.ip", None),
    "KAFKA-009": (KAFKA_ZK, "super.users", "User:kafka-admin;User:ANONYMOUS"),
    "KAFKA-010": (KAFKA_ZK, "com.sun.management.jmxremote.authenticate", "false"),
    "KAFKA-011": (KAFKA_KRAFT, "listener.security.protocol.map", "SSL:SSL,CONTROLLER:PLAINTEXT"),
    "KAFKA-012": (KAFKA_KRAFT, "ssl.endpoint.identification.algorithm", ""),
    "KAFKA-013": (KAFKA_KRAFT, "ssl.enabled.protocols", "TLSv1.2,TLSv1.1"),
    "KAFKA-014": (KAFKA_ZK, "unclean.leader.election.enable", "true"),
}
# A second ZooKeeper variant of the metadata-quorum item: ACLs off.
KAFKA_BAD_EXTRA = {"KAFKA-011": (KAFKA_ZK, "zookeeper.set.acl", "false")}


def kafka_bad(rule: str, table: dict[str, tuple[str, str, str | None]] = KAFKA_BAD) -> tuple[str, str | None]:
    """(file text, the planted line or None when the item is a missing setting)."""
    base, key, value = table[rule]
    return _set(base, key, value), (None if value is None else f"{key}={value}")


NATS_TLS = """\
tls {
  cert_file: "server.crt"
  key_file: "server.key"
  ca_file: "ca.crt"
  verify_and_map: true
}
"""
NATS_AUTH = """\
authorization {
  users = [
    {user: "orders-svc", permissions: {publish: {allow: ["ew.orders.>"]}, subscribe: {allow: ["_INBOX.>"]}}}
    {user: "billing", permissions: {subscribe: {allow: ["ew.orders.>"]}}}
  ]
}
"""
NATS_GOOD = f"""\
# single server, mTLS, per-user permissions
server_name: "n1"
listen: "127.0.0.1:4222"
max_payload: 1MB
jetstream {{
  store_dir: "/var/lib/nats"
}}
{NATS_TLS}{NATS_AUTH}"""
NATS_CLUSTER_GOOD = NATS_GOOD + """\
cluster {
  name: "c1"
  listen: 0.0.0.0:6222
  routes = [nats-route://n2:6222, nats-route://n3:6222]
  tls { cert_file: "server.crt", key_file: "server.key", ca_file: "ca.crt", verify: true }
}
http: 127.0.0.1:8222
"""
_BCRYPT = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"

# checklist id -> (text, the planted line)
NATS_BAD = {
    "NATS-001": (NATS_GOOD.replace(NATS_TLS, "").replace('user: "billing"', f'user: "billing", password: "{_BCRYPT}"'),
                 None),
    "NATS-002": (NATS_GOOD.replace("verify_and_map: true", "timeout: 2").replace(NATS_AUTH, ""), None),
    "NATS-003": (NATS_GOOD.replace(NATS_AUTH, ""), None),
    "NATS-004": (NATS_GOOD.replace('user: "billing"', 'user: "billing", password: "hunter2-plaintext"'),
                 '{user: "billing", password: "hunter2-plaintext", '
                 'permissions: {subscribe: {allow: ["ew.orders.>"]}}}'),
    "NATS-005": (NATS_CLUSTER_GOOD.replace(", verify: true", ""), "cluster {"),
    "NATS-006": (NATS_CLUSTER_GOOD.replace("http: 127.0.0.1:8222", "http: 0.0.0.0:8222"), "http: 0.0.0.0:8222"),
    "NATS-007": (NATS_GOOD.replace("max_payload: 1MB", "max_payload: 64MB"), "max_payload: 64MB"),
    "NATS-008": (NATS_GOOD + 'no_auth_user: "billing"\n', 'no_auth_user: "billing"'),
    "NATS-009": (NATS_GOOD + "allow_non_tls: true\n", "allow_non_tls: true"),
    "NATS-010": (NATS_GOOD + "trace: true\n", "trace: true"),
}
