"""``attestgate policy default``: print the built-in policy."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from attestgate.cli import common


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="show the built-in policy")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    policy_sub.add_parser("default", help="print the built-in policy")


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.policy.engine import default_policy_bytes

    stdout.write(default_policy_bytes().decode("utf-8"))
    return common.EXIT_ALLOW
