"""Operator commands of the payments-gateway service: ``python -m payments_gateway.cli --help``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from payments_gateway.config import Settings
from servicekit.cli import run_cli

MIGRATIONS = "payments_gateway:migrations"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command."""
    return run_cli(
        prog="payments_gateway.cli",
        settings_factory=Settings,
        script_location=MIGRATIONS,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
