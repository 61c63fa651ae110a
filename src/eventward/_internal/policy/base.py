"""The authorization seam: every enforcement point asks an Authorizer and nothing else.

Deny by default. A Decision carries enough to explain itself (which policies decided, and
for a denial the grant that is missing) without ever carrying payload values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventward.errors import AccessDenied

Resource = tuple[str, str]  # (kind, id): ("Topic", "orders"), ("Class", "pii"), ("Schema", "OrderPlaced")

# Actions (Cedar action ids). Encrypt and Decrypt are checked per sensitivity class, with the
# topic and event type in the context.
PUBLISH = "Publish"
SUBSCRIBE = "Subscribe"
ENCRYPT = "Encrypt"
DECRYPT = "Decrypt"
PROPOSE_SCHEMA = "ProposeSchema"
APPROVE_SCHEMA = "ApproveSchema"
APPROVE_SECURITY = "ApproveSecurity"
READ_SCHEMA = "ReadSchema"
MANAGE_POLICY = "ManagePolicy"
FORGET = "Forget"
HOLD = "Hold"
ROTATE_KEYS = "RotateKeys"
REPLAY = "Replay"
REDRIVE_DLQ = "RedriveDLQ"
READ_AUDIT = "ReadAudit"

ACTIONS = (
    PUBLISH,
    SUBSCRIBE,
    ENCRYPT,
    DECRYPT,
    PROPOSE_SCHEMA,
    APPROVE_SCHEMA,
    APPROVE_SECURITY,
    READ_SCHEMA,
    MANAGE_POLICY,
    FORGET,
    HOLD,
    ROTATE_KEYS,
    REPLAY,
    REDRIVE_DLQ,
    READ_AUDIT,
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    principal: str
    action: str
    resource: Resource
    policies: tuple[str, ...] = ()  # ids of the policies that decided
    missing: str | None = None  # for a denial: the grant that would allow it
    errors: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def explain(self) -> str:
        verdict = "ALLOW" if self.allowed else "DENY"
        kind, rid = self.resource
        lines = [f"{verdict} {self.principal} {self.action} {kind}::{rid}"]
        if self.policies:
            lines.append("decided by: " + ", ".join(self.policies))
        elif not self.allowed:
            lines.append("decided by: default deny (no policy permits this)")
        if self.missing:
            lines.append(f"missing grant: {self.missing}")
        lines.extend(f"policy error: {e}" for e in self.errors)
        return "\n".join(lines)


class Authorizer(Protocol):
    def decide(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> Decision: ...


def check(
    authorizer: Authorizer,
    principal: str,
    action: str,
    resource: Resource,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide, and raise AccessDenied (carrying the explanation) on a denial."""
    d = authorizer.decide(principal, action, resource, context)
    if not d.allowed:
        kind, rid = resource
        raise AccessDenied(f"{principal} may not {action} {kind}::{rid}", explanation=d)
    return d


class AllowList:
    """The simplest deny-by-default authorizer: an explicit set of (principal, action, resource).

    ``"*"`` as a resource id matches any id of that kind. Used for bootstrapping and tests;
    deployments use the Cedar engine in ``eventward._internal.policy``.
    """

    def __init__(self, grants: Iterable[tuple[str, str, Resource]] = ()) -> None:
        self._grants = set(grants)

    def grant(self, principal: str, action: str, resource: Resource) -> None:
        self._grants.add((principal, action, resource))

    def revoke(self, principal: str, action: str, resource: Resource) -> None:
        self._grants.discard((principal, action, resource))

    def decide(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> Decision:
        kind, _ = resource
        for r in (resource, (kind, "*")):
            if (principal, action, r) in self._grants:
                return Decision(
                    True,
                    principal,
                    action,
                    resource,
                    policies=(f"grant:{principal}:{action}:{r[0]}::{r[1]}",),
                )
        return Decision(
            False, principal, action, resource, missing=f"{principal} {action} {kind}::{resource[1]}"
        )
