"""Operator commands of the users service: ``python -m users_service.cli --help``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from servicekit.cli import run_cli
from users_service.config import Settings

MIGRATIONS = "users_service:migrations"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command."""
    return run_cli(
        prog="users_service.cli", settings_factory=Settings, script_location=MIGRATIONS, argv=argv
    )


if __name__ == "__main__":
    sys.exit(main())
