"""How a CLI command gets at the deployment, and who it acts as.

Every command that touches state opens the home through :func:`deployment`, so the CLI
enforces exactly what the SDK and the gateway enforce: one Cedar policy engine as the
authorizer, one tamper-evident audit log as the audit sink.

``--as PRINCIPAL`` is *asserted, not authenticated*: the CLI runs with the home's key
material (master key or passphrase), so whoever can run it against a home is an operator
of that deployment. ``--as`` makes the policy apply to the role the operator is playing
and puts that name in the audit log; it does not prove identity. Services that must be
authenticated go through the gateway (mTLS or JWT), and so do operators in client mode
(``--profile``/``--connect``, cli/remote.py), where ``--as`` does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from eventward._internal.cli import common
from eventward.errors import NotFoundError

if TYPE_CHECKING:  # imported where used: building the CLI (--help) must not load the deployment
    from eventward._internal.deployment import Deployment
    from eventward._internal.policy.base import Resource

ADMIN = "admin"
PRINCIPAL_ENV = "EVENTWARD_PRINCIPAL"
_AS_HELP = (
    f"Principal the command acts as (or env {PRINCIPAL_ENV}). "
    "Asserted, not authenticated: the CLI is an operator tool. Home mode only: with --profile or "
    "--connect your certificate is the principal."
)


def as_admin() -> Any:
    """``--as`` for control-plane commands: defaults to the bootstrap administrator."""
    return typer.Option(ADMIN, "--as", envvar=PRINCIPAL_ENV, show_envvar=False, help=_AS_HELP)


def as_required() -> Any:
    """``--as`` for data-plane and change-control commands: there is no sensible default."""
    return typer.Option(..., "--as", envvar=PRINCIPAL_ENV, show_envvar=False, help=_AS_HELP)


@contextmanager
def deployment(principal: str) -> Iterator[Deployment]:
    """The selected home opened as one Deployment for ``principal`` (whose broker credentials a
    transport may need); the keyring passphrase comes from EVENTWARD_PASSPHRASE."""
    from eventward._internal.client.trust import check_principal
    from eventward._internal.deployment import Deployment

    check_principal(principal)  # the name may fill broker credential paths: a safe alphabet only
    dep = Deployment.open(common.home(), principal=principal)
    try:
        yield dep
    finally:
        dep.close()


def authorize(dep: Deployment, principal: str, action: str, resource: Resource) -> None:
    """Check one action against the policy; a denial is an AccessDenied (and audited by the engine)."""
    from eventward._internal.policy.base import check

    check(dep.policy, principal, action, resource)


def require_signing_key(dep: Deployment, principal: str, *, dead_letters: bool = False) -> None:
    """Producers seal batches (a seal key) and consumers seal dead letters (a dead-letter key,
    or a seal key): both need a registered key."""
    try:
        if dead_letters:
            dep.trust.dead_letter_signer(principal)
        else:
            dep.trust.signer_for(principal)
    except NotFoundError:
        flag = " --purpose dead_letter" if dead_letters else ""
        raise NotFoundError(
            f"{principal} has no signing key: an administrator must run "
            f"'eventward trust register {principal}{flag} --as admin' first"
        ) from None
