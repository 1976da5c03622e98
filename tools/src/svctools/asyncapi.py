"""Write (or check) docs/asyncapi.json from the event schemas and each service's bindings.

The bindings are read from the services themselves: each app is built (nothing connects at
construction) and its runtime says which event types it declares it publishes (the outbox
refuses any other) and which routing keys each of its queues consumes.

    python -m svctools.asyncapi          # write docs/asyncapi.json
    python -m svctools.asyncapi --check  # exit 1 when the committed document is stale
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from servicekit.asyncapi import ServiceBinding, build_document
from servicekit.runtime import REVOCATIONS_PURPOSE

SERVICES = {
    "auth": "auth_service",
    "users": "users_service",
    "orders": "orders_service",
    "payments-gateway": "payments_gateway",
    "notifications": "notifications_service",
}
REPO = Path(__file__).resolve().parents[3]
DOCUMENT = REPO / "docs" / "asyncapi.json"
SCHEMA = REPO / "docs" / "asyncapi-3.0.0.schema.json"


def collect_bindings() -> list[ServiceBinding]:
    """Ask every service's app what it publishes and consumes."""
    bindings = []
    for service, package in SERVICES.items():
        main = importlib.import_module(f"{package}.main")
        runtime = main.create_app().state.runtime
        consumes = {spec.purpose: sorted(spec.handlers) for spec in runtime.consumers}
        consumes[REVOCATIONS_PURPOSE] = ["session.revoked", "user.deleted"]
        bindings.append(
            ServiceBinding(
                service=service, publishes=sorted(runtime.publishes or ()), consumes=consumes
            )
        )
    return bindings


def render() -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    document: dict[str, Any] = build_document(collect_bindings())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write or check the committed document."""
    parser = argparse.ArgumentParser(prog="python -m svctools.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the document is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.exists() else ""
        if current != text:
            print(f"{DOCUMENT.relative_to(REPO)} is stale: run `make docs`")
            return 1
        print(f"{DOCUMENT.relative_to(REPO)} is current")
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
