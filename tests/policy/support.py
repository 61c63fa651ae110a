"""Shared test data for policy tests: the reference policy, ABAC rules, a settable clock."""

from __future__ import annotations

import calendar

POLICY = """
principals:
  orders-svc: {type: service, roles: [order-writer], attributes: {zone: internal, tier: 1}}
  shipping-svc: {type: service, roles: [shipping]}
  analytics-svc: {type: service, roles: [analytics], attributes: {zone: external}}
  bi-svc: {type: service, roles: [analytics], attributes: {zone: internal}}
  archiver: {type: service, roles: [archiver]}
  batch-job: {type: service, roles: []}
  auditor: {type: user, roles: [read-only]}
  alice: {type: user, roles: [schema-admin, security-admin, policy-admin]}
  dpo: {type: user, roles: [privacy]}
roles:
  order-writer:
    - {allow: publish, topic: orders, event_types: [OrderPlaced, OrderCancelled]}
  shipping:
    - {allow: subscribe, topic: orders}
    - {allow: subscribe, topic: "orders.", match: prefixed}
    - {allow: decrypt, classes: [pii]}
  analytics:
    - {allow: subscribe, topic: "*"}
    - {deny: subscribe, topic: payments}
  archiver:
    - {allow: [subscribe, replay], topic: "orders", match: prefixed}
  read-only:
    - {allow: read_schema, schema: "*"}
    - {allow: read_audit}
  schema-admin: [{allow: [propose_schema, approve_schema, read_schema], schema: "*"}]
  security-admin: [{allow: approve_security, schema: "*"}]
  policy-admin: [{allow: manage_policy}]
  privacy:
    - {allow: [forget, hold]}
    - {allow: rotate_keys, classes: [pii, payment]}
"""

# ABAC: principal attributes, network zone, and a batch window 01:00-03:00 UTC.
ABAC = """
@id("batch-window")
permit (
  principal == Eventward::Service::"batch-job",
  action == Eventward::Action::"Publish",
  resource == Eventward::Topic::"reports"
) when { context.hour >= 1 && context.hour < 3 };

@id("internal-decrypt")
permit (
  principal,
  action == Eventward::Action::"Decrypt",
  resource == Eventward::Class::"payment"
) when {
  principal has zone && principal.zone == "internal" && context has zone && context.zone == "internal"
};

@id("no-external-hr")
forbid (
  principal,
  action == Eventward::Action::"Subscribe",
  resource == Eventward::Topic::"hr"
) unless { principal has zone && principal.zone == "internal" };
"""


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, 0)))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
