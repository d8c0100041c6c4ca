"""cert-manager's acmesolver, what its HTTP-01 solver pod runs: an HTTP server on the pod IP that
answers ``GET /.well-known/acme-challenge/<token>`` for its domain with the key authorization and
404 to anything else, logging each request as the real one does (pkg/issuer/acme/http/solver).
The runtime starts it as the pod's process (labsim.runtime.programs.acmesolver):
``python -m labsim.apps.acmesolver --listen-address=IP --listen-port=8089 --domain= --token= --key=``.
"""

from __future__ import annotations

import argparse
import http.server
import posixpath
import sys
from datetime import UTC, datetime

CHALLENGE_PATH = "/.well-known/acme-challenge"


def log(message: str, **fields: object) -> None:
    """One klog line, as the real solver's structured logger writes them."""
    now = datetime.now(UTC)
    values = " ".join(f"{k}={v!r}".replace("'", '"') for k, v in fields.items())
    print(f"I{now:%m%d %H:%M:%S.%f} 1 solver.go:0] \"{message}\" {values}".rstrip(), flush=True)


def handler(domain: str, token: str, key: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Solver(http.server.BaseHTTPRequestHandler):
        server_version, sys_version = "", ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if path in ("/", "/healthz"):
                log("responding OK to health check", host=host, path=path)
                return self.answer(200, "")
            base, asked = posixpath.dirname(path), posixpath.basename(path)
            log("validating request", host=host, path=path, base_path=base, token=asked)
            if base != CHALLENGE_PATH:
                log("invalid base_path", host=host, path=path, expected_base_path=CHALLENGE_PATH)
                return self.answer(404, "404 page not found\n")
            if host != domain:
                log("invalid host", host=host, path=path, expected_host=domain)
                return self.answer(404, "404 page not found\n")
            if asked != token:
                log("invalid token", host=host, path=path, expected_token=token)
                return self.answer(404, "404 page not found\n")
            log("got successful challenge request, writing key", host=host, path=path, token=asked)
            self.answer(200, key)

        def answer(self, status: int, body: str) -> None:
            self.send_response(status)
            self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass  # the lines above are the solver's log

    return Solver


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="acmesolver")
    parser.add_argument("--listen-address", required=True)  # the pod IP (the runtime adds it)
    parser.add_argument("--listen-port", type=int, default=8089)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    log("starting listener", expected_domain=args.domain, expected_token=args.token, expected_key=args.key,
        listen_port=args.listen_port)
    server = http.server.ThreadingHTTPServer((args.listen_address, args.listen_port),
                                             handler(args.domain, args.token, args.key))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
