"""``attestgate serve``: run the HTTP service, or create an API token for it."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError

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
        "--vsa-trusted-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="public key (PEM) whose signed verification summaries the admission webhook "
        "accepts in place of an allow decision (repeatable; default: none)",
    )
    parser.add_argument(
        "--vsa-policy-digest",
        action="append",
        default=[],
        metavar="SHA256",
        help="SHA-256 of a policy, besides the service's own, under which verification "
        "summaries count (repeatable)",
    )
    parser.add_argument(
        "--vsa-max-age-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="verification summaries older than DAYS no longer count (default: 30)",
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

    from attestgate.evidence.keys import load_public_key
    from attestgate.service.app import ServiceConfig
    from attestgate.service.server import serve

    config = ServiceConfig(
        home=home,
        intake=args.intake,
        workers=args.workers,
        vsa_keys=[load_public_key(path) for path in args.vsa_trusted_key],
        vsa_policy_digests=[_policy_digest(text) for text in args.vsa_policy_digest],
        vsa_max_age=_max_age(args.vsa_max_age_days),
    )
    serve(config, host=args.host, port=args.port)
    return common.EXIT_ALLOW


def _policy_digest(text: str) -> str:
    value = text.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(
            f"--vsa-policy-digest {text!r} is not a SHA-256 digest",
            hint="pass 64 hex digits, as policy.digest.sha256 shows in a verification summary",
        )
    return value


def _max_age(days: float) -> timedelta:
    if not 0 < days <= 3660:
        raise UsageError(
            f"--vsa-max-age-days {days:g} is out of range",
            hint="pass a number of days above 0 and at most 3660",
        )
    return timedelta(days=days)
