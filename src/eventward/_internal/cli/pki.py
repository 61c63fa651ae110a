"""``eventward pki``: the deployment CA's certificates: init, issue, sign-csr, renew, revoke, crl, list.

Like ``gateway cert`` and ``nats cert`` these act on the home's ``certs/`` directly; every signature
goes through the CA key configured in ``pki.ca_key`` (a 0600 file by default, or a PKCS#11 token,
Transit or AWS KMS key that never leaves it). Revocation publishes the CRL that ``serve`` re-reads within
``gateway.tls.reload_s`` and rewrites the NATS servers' ``pinned_certs`` with a SIGHUP reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from eventward._internal.cli import common
from eventward.errors import InputError

if TYPE_CHECKING:
    from eventward._internal import certstore

pki_app = typer.Typer(help="The deployment CA: issue, renew, revoke, CRL, list (docs/gateway.md).")
_JSON = common.json_option()
# certstore's defaults and revocation reasons, spelt here so that building the CLI does not load
# certstore (cryptography, the store); tests/cli/test_cli_lazy_imports.py holds them equal.
DEFAULT_DAYS, CRL_DAYS = 30, 7
REASONS = ("unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
           "cessation-of-operation", "privilege-withdrawn")
_DAYS = typer.Option(DEFAULT_DAYS, "--days", min=1, max=825, help="Lifetime in days.")


def register(app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")


def _print(rec: certstore.CertRecord, verb: str) -> None:
    common.console.print(
        f"{verb} {rec.principal} serial {rec.serial} ({rec.kind}), expires in {rec.days_left():.1f} days"
        + (f"\ncertificate {rec.path}" if rec.path else ""),
        highlight=False, markup=False, soft_wrap=True,
    )


def _nats_reload() -> list[str]:
    from eventward._internal import certstore
    from eventward._internal.cli.nats import run_root

    home = common.home()
    return certstore.apply_nats_pins(home.certs, run_root(home))


@pki_app.command("init", epilog=common.examples("eventward pki init"))
def init_cmd(cn: str = typer.Option("eventward CA", "--cn", help="The CA's common name.")) -> None:
    """Create the CA (or adopt the home's), the issued-certificate table and an empty CRL. With
    pki.ca_key in a token or KMS the key is generated there (or the named key used) and never leaves it."""
    from eventward._internal import casigner, certstore

    home = common.home().ensure()
    where = casigner.describe(casigner.config_for(home.certs))
    _, adopted = certstore.init(home.certs, cn)
    common.console.print(
        f"CA {home.certs / 'ca.crt'} (key in {where}), CRL {home.certs / certstore.CRL_NAME}; "
        f"{len(adopted)} existing certificate(s) adopted",
        highlight=False, markup=False, soft_wrap=True,
    )


@pki_app.command("issue", epilog=common.examples("eventward pki issue orders-svc --days 30"))
def issue_cmd(
    principal: str = typer.Argument(..., help="The principal (certificate CN and SAN)."),
    server: bool = typer.Option(False, "--server", help="Also a TLS server certificate (needs --san)."),
    san: list[str] = typer.Option([], "--san", help="Server name or IP (repeatable)."),
    days: int = _DAYS,
) -> None:
    """Issue a short-lived certificate and 0600 key for PRINCIPAL."""
    from eventward._internal import certstore

    home = common.home().require()
    rec = certstore.issue(home.certs, principal, server=server, sans=san, days=days)
    _nats_reload()
    _print(rec, "issued")


@pki_app.command("sign-csr", epilog=common.examples("eventward pki sign-csr svc.csr --principal orders-svc"))
def sign_csr_cmd(
    csr: Path = typer.Argument(..., help="PEM PKCS#10 request; its subject CN must be the principal."),
    principal: str = typer.Option(..., "--principal", help="The enrolled principal."),
    days: int = _DAYS,
) -> None:
    """Certify a service's own key (the key never leaves it); the principal must be enrolled."""
    from eventward._internal import certstore

    home = common.home().require()
    try:
        raw = csr.read_bytes()
    except OSError:
        raise InputError(f"cannot read the certificate request {csr}") from None
    from eventward._internal.client.trust import is_enrolled

    enrolled = is_enrolled(home, principal)
    rec = certstore.sign_csr(home.certs, raw, principal, enrolled, days=days)
    _nats_reload()
    _print(rec, "certified")


@pki_app.command("adopt", epilog=common.examples("eventward pki adopt services/orders-svc/tls.crt"))
def adopt_cmd(cert: Path = typer.Argument(..., help="A PEM certificate this CA signed before 'pki init'.")) -> None:
    """Book an existing certificate (so NATS pins it and it can be listed and revoked)."""
    from eventward._internal import certstore

    home = common.home().require()
    rec = certstore.adopt(home.certs, cert)
    _nats_reload()
    _print(rec, "adopted")


@pki_app.command("renew", epilog=common.examples("eventward pki renew orders-svc"))
def renew_cmd(principal: str = typer.Argument(...), days: int = _DAYS) -> None:
    """A new key and certificate over the old files; the old one stays valid until it expires."""
    from eventward._internal import certstore

    home = common.home().require()
    rec = certstore.renew(home.certs, principal, days=days)
    _nats_reload()
    _print(rec, "renewed")


@pki_app.command("revoke", epilog=common.examples("eventward pki revoke orders-svc --reason key-compromise"))
def revoke_cmd(
    target: str = typer.Argument(..., help="A serial (hex) or a principal (all its valid certificates)."),
    reason: str = typer.Option(..., "--reason", help=f"One of: {', '.join(REASONS)}."),
) -> None:
    """Revoke, publish the CRL, and reload the NATS servers' pins (takes effect at once there,
    within gateway.tls.reload_s in serve)."""
    from eventward._internal import certstore

    home = common.home().require()
    done = certstore.revoke(home.certs, target, reason)
    nodes = _nats_reload()
    for rec in done:
        common.console.print(f"revoked {rec.principal} serial {rec.serial} ({reason})", highlight=False, markup=False)
    common.console.print(
        f"CRL {home.certs / certstore.CRL_NAME} published; NATS reloaded: {', '.join(nodes) or 'none running'}",
        highlight=False, markup=False, soft_wrap=True,
    )


@pki_app.command("crl")
def crl_cmd(days: int = typer.Option(CRL_DAYS, "--days", min=1, max=90, help="next_update in days.")) -> None:
    """Publish (re-sign) the CRL now."""
    from eventward._internal import certstore, pki

    home = common.home().require()
    if not certstore.CertRegistry.managed(home.certs):
        raise InputError("the PKI is not initialised: run 'eventward pki init' first")
    reg = certstore.CertRegistry(home.certs)
    ca = pki.open_ca(home.certs)
    try:
        path = reg.publish_crl(ca, days=days)
    finally:
        ca.close()
    common.console.print(f"CRL {path} (next update in {days} days)", highlight=False, markup=False)


@pki_app.command("list")
def list_cmd(
    principal: str = typer.Option(None, "--principal", help="Only this principal's certificates."),
    expiring_within: float = typer.Option(
        None, "--expiring-within", min=0, help="Only valid ones expiring within DAYS; exit 1 if any (for cron/CI)."
    ),
    as_json: bool = _JSON,
) -> None:
    """Issued certificates with status and days to expiry (soonest first)."""
    from eventward._internal import certstore

    home = common.home().require()
    if not certstore.CertRegistry.managed(home.certs):
        raise InputError("the PKI is not initialised: run 'eventward pki init' first")
    rows = certstore.CertRegistry(home.certs).list(principal)
    if expiring_within is not None:
        rows = [r for r in rows if r.status == certstore.VALID and r.days_left() <= expiring_within]
    if as_json:
        common.emit_json({"certificates": [r.as_json() for r in rows]})
    else:
        _table(rows)
    if expiring_within is not None and rows:
        raise typer.Exit(1)


def _table(rows: list[certstore.CertRecord]) -> None:
    for r in rows:
        common.console.print(
            f"{r.serial:<34} {r.principal:<24} {r.kind:<13} {r.status:<8} {r.days_left():8.1f} days"
            + (f"  ({r.reason})" if r.reason else ""),
            highlight=False, markup=False,
        )


@pki_app.command("inspect")
def inspect_cmd(cert: Path = typer.Argument(..., help="A PEM certificate file."), as_json: bool = _JSON) -> None:
    """A certificate's principal, serial, expiry and status in this CA's book."""
    from eventward._internal import certstore

    home = common.home()
    c = certstore.load_cert_file(cert)
    serial = format(c.serial_number, "x")
    status = "unknown (not issued by this CA's book)"
    if certstore.CertRegistry.managed(home.certs):
        found = [r for r in certstore.CertRegistry(home.certs).list() if r.serial == serial]
        status = found[0].status if found else status
    doc = {
        "serial": serial, "subject": c.subject.rfc4514_string(),
        "not_after": c.not_valid_after_utc.isoformat(), "status": status,
    }
    if as_json:
        common.emit_json(doc)
        return
    common.console.print("\n".join(f"{k:<10} {v}" for k, v in doc.items()), highlight=False, markup=False)
