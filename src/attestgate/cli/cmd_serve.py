"""``attestgate serve``: run the HTTP service, or create an API token for it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common

ROLES = ("submitter", "reviewer", "admin")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the HTTP service with the triage page and the admission webhook",
        description="Serve the admission API, the quarantine triage page, Prometheus metrics "
        "and a Kubernetes validating admission webhook. Logs are JSON lines on stderr. "
        "With --create-token, print a new API token and exit instead.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    parser.add_argument(
        "--intake",
        type=Path,
        metavar="DIR",
        help="intake root: submitted paths must lie inside it (default: HOME/intake)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="admissions run in parallel (default: 4)"
    )
    parser.add_argument(
        "--create-token", metavar="NAME", help="create an API token called NAME, print it, exit"
    )
    parser.add_argument(
        "--role", choices=ROLES, default="submitter", help="role of the token --create-token makes"
    )
    common.add_home_option(parser)
    common.add_verbose_option(parser)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    home: Path = args.home or common.default_home()
    if args.create_token:
        from attestgate.service.tokens import TokenStore

        tokens = TokenStore.open(home)
        try:
            _token, secret = tokens.create(args.create_token, args.role)
        finally:
            tokens.close()
        stdout.write(f"{secret}\n")
        return common.EXIT_ALLOW

    from attestgate.service.server import serve

    serve(home=home, host=args.host, port=args.port, intake=args.intake, workers=args.workers)
    return common.EXIT_ALLOW
