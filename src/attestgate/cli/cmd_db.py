"""``attestgate db upgrade|downgrade|current|history``: the database schema's migrations."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "db",
        help="upgrade the database schema or show its revision",
        description="Manage the schema of the gate's database: attestgate.db (SQLite) in the\n"
        "state directory, or the database that ATTESTGATE_DATABASE_URL names.\n\n"
        "Every other command that opens the database upgrades it to the newest\n"
        "revision on its own. `db upgrade` does the same on purpose, for example\n"
        "before several replicas start. `db current` and `db history` do not\n"
        "migrate, and report a state directory without attestgate.db instead of\n"
        "creating the file.",
        epilog=common.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrading = actions.add_parser(
        "upgrade",
        help="migrate to the newest revision (or REVISION), adopting a database made without one",
    )
    upgrading.add_argument(
        "revision",
        nargs="?",
        default="head",
        metavar="REVISION",
        help="target revision, such as 0003 (default: head, the newest); `db history` lists them",
    )
    downgrading = actions.add_parser(
        "downgrade", help="migrate down to REVISION, dropping the tables added after it"
    )
    downgrading.add_argument(
        "revision",
        metavar="REVISION",
        help="target revision, 0001 or later; `db history` lists them",
    )
    current = actions.add_parser("current", help="print the database's schema revision")
    history = actions.add_parser("history", help="list the schema revisions, newest first")
    for child in (upgrading, downgrading, current, history):
        common.add_home_option(child)
        common.add_output_options(child)


def _database_exists(home: Path) -> bool:
    from attestgate.storage import DB_FILE, database_url

    return not database_url(home).startswith("sqlite") or (home / DB_FILE).is_file()


def _text_history(items: list[dict[str, Any]], current: str | None) -> str:
    lines = []
    for item in items:
        marks = [m for m, on in (("head", item["head"]), ("current", item["current"])) if on]
        suffix = f" ({', '.join(marks)})" if marks else ""
        lines.append(
            f"{item['down_revision'] or '<base>'} -> {item['revision']}{suffix}: "
            f"{item['description']}"
        )
    if current is None:
        lines.append("the database has no schema revision yet")
    return "\n".join(lines)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate import migrations
    from attestgate.storage import open_engine

    home: Path = args.home or common.default_home()
    common.check_output(args.output)
    as_json = args.format == "json"
    head = migrations.head_revision()
    if args.action in ("upgrade", "downgrade"):
        home.mkdir(parents=True, exist_ok=True)
    elif not _database_exists(home):
        body: Any = {"revision": None, "head": head, "at_head": False}
        if args.action == "history":
            items = [{**r.to_json(), "current": False} for r in migrations.revisions()]
            text = common.dump_json(items) if as_json else _text_history(items, None)
        else:
            text = common.dump_json(body) if as_json else f"no database in {home}; head is {head}"
        common.emit(text, args.output, stdout)
        return common.EXIT_ALLOW

    engine = open_engine(home)
    try:
        if args.action == "upgrade":
            change = migrations.upgrade(engine, args.revision)
            body = change.to_json()
            text = f"schema revision {change.before or '(none)'} -> {change.after}"
        elif args.action == "downgrade":
            change = migrations.downgrade(engine, args.revision)
            body = change.to_json()
            text = f"schema revision {change.before} -> {change.after}"
        elif args.action == "current":
            revision = migrations.current_revision(engine)
            body = {"revision": revision, "head": head, "at_head": revision == head}
            state = "at head" if revision == head else f"head is {head}"
            text = f"{revision or '(none)'} ({state})"
        else:
            revision = migrations.current_revision(engine)
            body = [
                {**r.to_json(), "current": r.revision == revision} for r in migrations.revisions()
            ]
            text = _text_history(body, revision)
    finally:
        engine.dispose()
    common.emit(common.dump_json(body) if as_json else text, args.output, stdout)
    return common.EXIT_ALLOW
