"""Operator commands of the notifications service (`python -m notifications_service.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from notifications_service.config import Settings
from servicekit.cli import run_cli

MIGRATIONS = "notifications_service:migrations"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command."""
    return run_cli(
        prog="notifications_service.cli",
        settings_factory=Settings,
        script_location=MIGRATIONS,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
