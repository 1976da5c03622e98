"""Operator commands of the auth service: ``python -m auth_service.cli --help``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

from pydantic import ValidationError

from auth_service import service
from auth_service.config import Settings
from auth_service.keys import KeyStore
from auth_service.main import PUBLISHES
from auth_service.models import outbox
from auth_service.passwords import PasswordHasher
from auth_service.schemas import RegisterRequest
from servicekit.cli import Command, run_cli
from servicekit.db import create_engine, session_factory
from servicekit.errors import AppError
from servicekit.migrations import upgrade
from servicekit.outbox import Outbox
from servicekit.settings import ServiceSettings

MIGRATIONS = "auth_service:migrations"


def _key_store(settings: Settings) -> KeyStore:
    pem = settings.signing_key_pem.get_secret_value() if settings.signing_key_pem else None
    return KeyStore(
        directory=settings.keys_dir,
        access_token_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        env_pem=pem,
    )


def migrate(_: argparse.Namespace, base: ServiceSettings) -> int:
    """Migrate the database; outside production also create a development signing key."""
    settings = cast(Settings, base)
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url)
    print(f"{settings.service_name}: database migrated")
    if not settings.is_production:
        created = _key_store(settings).ensure_development_key(bits=settings.rsa_key_bits)
        if created is not None:
            print(f"{settings.service_name}: development signing key {created.kid} created")
    return 0


def _rotate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--now",
        action="store_true",
        help="sign with the new key at once instead of after AUTH_KEY_ACTIVATION_DELAY_SECONDS "
        "(only safe when no other instance or verifier could miss the new key)",
    )


def rotate_keys(args: argparse.Namespace, base: ServiceSettings) -> int:
    """Add a signing key; the previous one stays published until its tokens expired."""
    settings = cast(Settings, base)
    delay = 0 if args.now else settings.key_activation_delay_seconds
    key, pruned = _key_store(settings).rotate(
        bits=settings.rsa_key_bits, activation_delay=timedelta(seconds=delay)
    )
    print(f"new signing key {key.kid} signs from {key.active_from.isoformat()}")
    for kid in pruned:
        print(f"removed expired key {kid}")
    return 0


def _admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of a prompt "
        "(the default when standard input is not a terminal)",
    )


class NoPasswordError(Exception):
    """No password was given: nothing on standard input, or the prompt was closed."""


def _read_password(from_stdin: bool) -> str:
    """The password from a prompt at a terminal, else the first line of standard input."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise NoPasswordError(
                "no password on standard input (pipe one line in, or run at a terminal "
                "to be prompted)"
            )
        return password
    try:
        password = getpass.getpass("Password: ")
        repeated = getpass.getpass("Repeat password: ")
    except EOFError:
        raise NoPasswordError("no password given at the prompt") from None
    if repeated != password:
        raise ValueError("the passwords differ")
    return password


async def _create_admin(settings: Settings, *, email: str, name: str, password: str) -> str:
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    hasher = PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        concurrency=1,
        queue_timeout=settings.hash_queue_timeout_seconds,
    )
    await hasher.start()
    try:
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            credential = await service.register(
                session=session,
                hasher=hasher,
                outbox=Outbox(outbox, producer=settings.service_name, publishes=PUBLISHES),
                email=email,
                password=password,
                name=name,
                roles=service.ADMIN_ROLES,
            )
        return str(credential.id)
    finally:
        hasher.close()
        await engine.dispose()


def create_admin(args: argparse.Namespace, base: ServiceSettings) -> int:
    """Create an account with the admin role (published as ``user.registered``)."""
    settings = cast(Settings, base)
    try:
        password = _read_password(args.password_stdin)
        request = RegisterRequest(email=args.email, name=args.name, password=password)
        user_id = asyncio.run(
            _create_admin(
                settings, email=request.email, name=request.name, password=request.password
            )
        )
    except NoPasswordError as exc:
        print(f"create-admin: {exc}", file=sys.stderr)
        return 2
    except AppError as exc:
        print(f"create-admin: {exc.message}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        # Never echo the input: it holds the password.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"create-admin: {problems}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"create-admin: {exc}", file=sys.stderr)
        return 1
    print(f"admin {request.email} created with id {user_id} (user.registered is published by auth)")
    return 0


COMMANDS = {
    "migrate": Command(
        "create the database if missing and apply migrations (and, outside production, "
        "a development signing key)",
        migrate,
    ),
    "rotate-keys": Command("add a new signing key (rotation)", rotate_keys, _rotate_arguments),
    "create-admin": Command("create an administrator account", create_admin, _admin_arguments),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command."""
    return run_cli(
        prog="auth_service.cli",
        settings_factory=Settings,
        script_location=MIGRATIONS,
        commands=COMMANDS,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
