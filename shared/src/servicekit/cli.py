"""The operator command line every service shares (``python -m <service>.cli --help``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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
        **(commands or {}),
    }
    parser = argparse.ArgumentParser(prog=prog, description=f"{prog} operator commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in every.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(command_parser)
    args = parser.parse_args(argv)
    result = every[args.command].run(args, settings_factory())
    return int(result or 0)
