"""``eventward harden check`` and ``eventward threats``: the deployment against a hardening
checklist, and the STRIDE threats its configuration covers and leaves open.

``harden check`` reads Kafka ``server.properties`` (``--kafka``), NATS server configurations
(``--nats``, following includes), live NATS servers through their monitoring port
(``--nats-url http://127.0.0.1:8222``) and ``eventward.yaml`` (``--config``). With none of
these it checks what this home has: its ``eventward.yaml`` and the NATS configurations
``eventward nats up`` wrote. Exit 0 with no finding at or above ``--fail-on``, 1 otherwise,
so CI can gate on it; ``--sarif FILE`` writes SARIF 2.1.0 for code-scanning tools.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.table import Table

from eventward._internal.cli import common
from eventward.errors import ConfigError, InputError, NotFoundError

if TYPE_CHECKING:
    from eventward._internal.harden.findings import Finding, Rule

harden_app = typer.Typer(help="Check brokers and eventward's configuration against a hardening checklist.",
                         no_args_is_help=True)


def all_rules() -> list[Rule]:
    """Every checker's rules (SARIF lists them); the checkers load with the command, not with the CLI."""
    from eventward._internal.harden import eventward_yaml, kafka, nats

    return [*kafka.RULES, *nats.RULES, *eventward_yaml.RULES]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eventward")
    except PackageNotFoundError:
        return "0"


def _home_targets() -> tuple[list[Path], list[Path]]:
    """This home's eventward.yaml and the NATS configs ``eventward nats up`` wrote."""
    home = common.home()
    configs = [home.config] if home.config.is_file() else []
    nats_confs = sorted((home.run_dir / "nats").glob("ew-*/nats.conf")) if home.run_dir.is_dir() else []
    return configs, nats_confs


def run_checks(
    kafka_files: list[Path], nats_files: list[Path], nats_urls: list[str], configs: list[Path]
) -> tuple[list[Finding], list[str]]:
    from eventward._internal.harden import eventward_yaml, kafka, nats
    from eventward._internal.harden.findings import sort_findings

    findings: list[Finding] = []
    sources: list[str] = []
    for p in kafka_files:
        findings += kafka.check_file(p)
        sources.append(str(p))
    for p in nats_files:
        findings += nats.check_file(p)
        sources.append(str(p))
    for url in nats_urls:
        shown = nats.display_url(url)
        findings += nats.check_varz(nats.fetch_varz(url), shown)
        sources.append(shown)
    for p in configs:
        findings += eventward_yaml.check_file(p)
        sources.append(str(p))
    return sort_findings(findings), sources


@harden_app.command(
    "check",
    epilog=common.examples(
        "eventward harden check",
        "eventward harden check --kafka /etc/kafka/server.properties --json",
        "eventward harden check --nats /etc/nats/nats.conf --nats-url http://127.0.0.1:8222 --sarif harden.sarif",
    ),
)
def check_cmd(
    kafka_files: list[Path] = typer.Option(None, "--kafka", metavar="FILE", help="A Kafka server.properties."),
    nats_files: list[Path] = typer.Option(None, "--nats", metavar="FILE", help="A NATS server configuration."),
    nats_urls: list[str] = typer.Option(
        None, "--nats-url", metavar="URL", help="A live NATS server's monitoring endpoint (reads /varz)."
    ),
    configs: list[Path] = typer.Option(None, "--config", metavar="FILE", help="An eventward.yaml."),
    sarif: Path = typer.Option(None, "--sarif", metavar="FILE", help="Also write SARIF 2.1.0 to FILE ('-': stdout)."),
    fail_on: str = typer.Option("low", "--fail-on", metavar="SEVERITY",
                                help="Exit 1 for findings at or above: low, medium, high, critical."),
    as_json: bool = common.json_option(),
) -> None:
    """Findings (id, severity, checklist item, file:line, offending text, fix); exit 1 if any."""
    from eventward._internal.harden.findings import SEVERITIES, to_json, to_sarif

    if fail_on not in SEVERITIES:
        raise InputError(f"--fail-on must be one of {', '.join(SEVERITIES)}")
    if as_json and sarif is not None and str(sarif) == "-":
        raise InputError("--json and --sarif - both write to stdout: give --sarif a file")
    kafka_files, nats_files, nats_urls, configs = kafka_files or [], nats_files or [], nats_urls or [], configs or []
    if not (kafka_files or nats_files or nats_urls or configs):
        configs, nats_files = _home_targets()
        if not (configs or nats_files):
            raise NotFoundError(
                "nothing to check: this home has no eventward.yaml and no NATS configuration "
                "(name files with --kafka, --nats, --nats-url or --config)"
            )
    findings, sources = run_checks(kafka_files, nats_files, nats_urls, configs)
    if sarif is not None:
        doc = orjson.dumps(to_sarif(findings, all_rules(), _version()), option=orjson.OPT_INDENT_2).decode() + "\n"
        if str(sarif) == "-":
            sys.stdout.write(doc)
            sys.stdout.flush()
        else:
            try:
                sarif.write_text(doc)
            except OSError as e:
                raise ConfigError(f"cannot write SARIF to {sarif}: {e.strerror}") from None
    if as_json:
        common.emit_json(to_json(findings, sources))
    elif str(sarif) != "-":
        _print(findings, sources)
    threshold = SEVERITIES.index(fail_on)
    if any(SEVERITIES.index(f.rule.severity) >= threshold for f in findings):
        raise typer.Exit(common.EXIT_PROBLEM)


def _print(findings: list[Finding], sources: list[str]) -> None:
    if not findings:
        common.console.print(f"no findings in {len(sources)} configuration(s): " + ", ".join(sources),
                             highlight=False, markup=False)
        return
    table = Table("severity", "id", "checklist", "where", "offending", "fix")
    for f in findings:
        where = f"{f.source}:{f.line}" if f.line else f"{f.source} (missing)" if not f.text else f.source
        table.add_row(f.rule.severity, f.rule.id, f.rule.checklist, where,
                      f.text or f.detail or "(not set)", f.rule.fix)
    common.console.print(table, markup=False)
    common.console.print(f"{len(findings)} finding(s) in {len(sources)} configuration(s)", highlight=False)


def threats_cmd(
    config: Path = typer.Option(None, "--config", metavar="FILE",
                                help="An eventward.yaml to report on instead of this home's."),
    as_json: bool = common.json_option(),
) -> None:
    """STRIDE threats of the deployment as configured: what covers each (with the setting), what stays open."""
    from eventward._internal.config import Config
    from eventward._internal.harden import threats
    from eventward._internal.harden.findings import read_text

    home = common.home()
    source = config if config is not None else (home.config if home.config.is_file() else None)
    cfg = Config.parse(read_text(source, "eventward.yaml"), source.name) if source is not None else Config()
    rows = threats.report(cfg, home if home.root.is_dir() else None)
    if as_json:
        doc: dict[str, Any] = {"deployment": threats.deployment(cfg, source), "threats": [t.as_dict() for t in rows]}
        common.emit_json(doc)
        return
    d = threats.deployment(cfg, source)
    common.console.print(
        f"deployment: transport {d['transport']}, kms {d['kms_backend']}, CA key {d['ca_key_backend']}, "
        f"config {d['config'] or '(defaults)'}",
        highlight=False, markup=False,
    )
    table = Table("id", "STRIDE", "threat", "covered by", "open", show_lines=True)
    for t in rows:
        table.add_row(t.id, t.category, t.threat, "\n".join(t.covered) or "-", "\n".join(t.open) or "-")
    common.console.print(table, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``eventward harden ...`` and ``eventward threats`` to the root app."""
    app.add_typer(harden_app, name="harden")
    app.command(
        "threats", epilog=common.examples("eventward threats", "eventward threats --json")
    )(threats_cmd)
