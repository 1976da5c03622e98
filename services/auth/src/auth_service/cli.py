"""Operator commands of the auth service: ``python -m auth_service.cli --help``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from auth_service.config import Settings
from servicekit.cli import run_cli

MIGRATIONS = "auth_service:migrations"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command."""
    return run_cli(
        prog="auth_service.cli", settings_factory=Settings, script_location=MIGRATIONS, argv=argv
    )


if __name__ == "__main__":
    sys.exit(main())
