"""The operator command line every service shares (``python -m <service>.cli --help``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from servicekit import operations
from servicekit.logging import configure_logging
from servicekit.migrations import upgrade
from servicekit.settings import ServiceSettings


@dataclass(frozen=True)
class Command:
    """A sub-command: its help line, how to add its arguments, and what it runs."""

    help: str
    run: Callable[[argparse.Namespace, ServiceSettings], int | None]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


def run_cli(
    *,
    prog: str,
    settings_factory: Callable[[], ServiceSettings],
    script_location: str,
    commands: Mapping[str, Command] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""

    def migrate(_: argparse.Namespace, settings: ServiceSettings) -> int:
        upgrade(script_location=script_location, database_url=settings.database_url)
        print(f"{settings.service_name}: database migrated")
        return 0

    every: dict[str, Command] = {
        "migrate": Command("create the database if missing and apply migrations", migrate),
        **_queue_commands(),
        "outbox-backlog": Command(
            "show unpublished outbox rows and the oldest one's age", _backlog
        ),
        **(commands or {}),
    }
    parser = argparse.ArgumentParser(prog=prog, description=f"{prog} operator commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in every.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(command_parser)
    args = parser.parse_args(argv)
    settings = settings_factory()
    # What the library logs meanwhile goes to stderr, in the service's format and redacted.
    configure_logging(
        service=settings.service_name,
        json=settings.log_json,
        level=settings.log_level,
        stream=sys.stderr,
    )
    try:
        result = every[args.command].run(args, settings)
    except LookupError as exc:
        print(f"{prog}: {exc}")
        return 1
    return int(result or 0)


def _queue_name(settings: ServiceSettings, queue: str) -> str:
    """A consumer purpose (``payment-results``) or a full queue name."""
    prefix = f"{settings.events_exchange}.{settings.service_name}."
    return queue if queue.startswith(prefix) else prefix + queue


def _queue_arguments(with_id: bool) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("queue", help="consumer purpose (e.g. payment-results) or queue name")
        if with_id:
            parser.add_argument("--id", dest="message_id", help="only this message id")

    return add


def _queue_commands() -> dict[str, Command]:
    def show_list(args: argparse.Namespace, settings: ServiceSettings) -> int:
        parked = asyncio.run(
            operations.list_parked(settings.amqp_url, _queue_name(settings, args.queue))
        )
        for message in parked:
            print(message.summary())
        print(f"{len(parked)} parked")
        return 0

    def show_one(args: argparse.Namespace, settings: ServiceSettings) -> int:
        parked = asyncio.run(
            operations.list_parked(settings.amqp_url, _queue_name(settings, args.queue))
        )
        for message in parked:
            if message.message_id == args.message_id:
                print(message.summary())
                headers = {k: operations.header_text(v) for k, v in message.headers.items()}
                print(json.dumps(headers, indent=2, sort_keys=True))
                print(message.body.decode(errors="replace"))
                return 0
        print(f"no parked message {args.message_id}")
        return 1

    def redrive(args: argparse.Namespace, settings: ServiceSettings) -> int:
        moved = asyncio.run(
            operations.redrive(
                settings.amqp_url, _queue_name(settings, args.queue), args.message_id
            )
        )
        print(f"{len(moved)} re-driven")
        return 0 if moved or args.message_id is None else 1

    def purge(args: argparse.Namespace, settings: ServiceSettings) -> int:
        if args.message_id is None and not args.all:
            print("name a message with --id, or pass --all to drop every parked message")
            return 2
        dropped = asyncio.run(
            operations.purge(settings.amqp_url, _queue_name(settings, args.queue), args.message_id)
        )
        print(f"{len(dropped)} purged")
        return 0

    def purge_arguments(parser: argparse.ArgumentParser) -> None:
        _queue_arguments(True)(parser)
        parser.add_argument("--all", action="store_true", help="drop every parked message")

    def show_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("queue", help="consumer purpose (e.g. payment-results) or queue name")
        parser.add_argument("message_id", help="the parked message's id")

    return {
        "dlq-list": Command(
            "list dead-lettered messages of a queue", show_list, _queue_arguments(False)
        ),
        "dlq-show": Command(
            "show one dead-lettered message with its headers", show_one, show_arguments
        ),
        "dlq-redrive": Command(
            "put dead-lettered messages back on their queue", redrive, _queue_arguments(True)
        ),
        "dlq-purge": Command("drop dead-lettered messages", purge, purge_arguments),
    }


def _backlog(_: argparse.Namespace, settings: ServiceSettings) -> int:
    pending, age = asyncio.run(operations.outbox_backlog(settings.database_url))
    print(f"outbox: {pending} pending, oldest {age:.1f} s")
    return 0
