"""A local RFC 3161 timestamp authority for tests: HTTP on 127.0.0.1 in front of ``openssl ts -reply``.

    python tsa_server.py DIR PORTFILE

DIR holds tsa.cnf (an openssl ``[tsa]`` section), the TSA key and certificate; the chosen port is
written to PORTFILE once the server listens. Stopped by its PID.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIR = Path(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(min(n, 1 << 16))
        with tempfile.TemporaryDirectory(dir=DIR) as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(query)
            done = subprocess.run(
                ["openssl", "ts", "-reply", "-config", str(DIR / "tsa.cnf"), "-queryfile", str(q), "-out", str(r)],
                capture_output=True,
                check=False,
            )
            body = r.read_bytes() if done.returncode == 0 and r.exists() else b""
        self.send_response(200 if body else 400)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
Path(sys.argv[2]).write_text(str(server.server_address[1]))
server.serve_forever()
