"""Operator commands: create-admin, migrate (development keys), rotate-keys."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from auth_service import cli
from auth_service.config import Settings
from auth_service.main import create_app
from servicekit.testing.plugin import serve_app
from tests.helpers import GOOD_PASSWORD, new_email


@pytest.fixture
def operator_env(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], None]:
    """Point the command line's settings (read from the environment) at this run."""
    monkeypatch.setenv("AUTH_ENVIRONMENT", "test")
    monkeypatch.setenv("AUTH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUTH_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("AUTH_RSA_KEY_BITS", "2048")

    def stdin(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return stdin


class TestCreateAdmin:
    async def test_creates_an_admin_who_can_log_in_and_is_announced(
        self,
        settings: Settings,
        operator_env: Callable[[str], None],
        capture_events: Callable[..., Any],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        capture = await capture_events(settings.events_exchange, ["user.registered"])
        email = new_email()
        operator_env(f"{GOOD_PASSWORD}\n")

        # In a thread, as from a shell: the command runs its own event loop.
        code = await asyncio.to_thread(
            cli.main,
            ["create-admin", "--email", email.upper(), "--name", "Root", "--password-stdin"],
        )

        output = capsys.readouterr()
        assert code == 0, output.err
        assert GOOD_PASSWORD not in output.out + output.err
        async with serve_app(create_app(settings)) as client:
            login = await client.post(
                "/auth/login", json={"email": email, "password": GOOD_PASSWORD}
            )
            # The running service's relay publishes what the command wrote to the outbox.
            found = await capture.wait_for("user.registered", where=lambda d: d.email == email)
        assert login.status_code == 200
        claims = jwt.decode(login.json()["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["admin"]
        assert found[0][1].roles == ["admin"]
        assert str(found[0][1].user_id) == claims["sub"]

    def test_refuses_a_weak_password_without_echoing_it(
        self, operator_env: Callable[[str], None], capsys: pytest.CaptureFixture[str]
    ) -> None:
        operator_env("password123456\n")
        code = cli.main(
            ["create-admin", "--email", new_email(), "--name", "Root", "--password-stdin"]
        )
        output = capsys.readouterr()
        assert code == 1
        assert "too common" in output.err
        assert "password123456" not in output.out + output.err

    def test_refuses_an_email_already_registered(
        self, operator_env: Callable[[str], None], capsys: pytest.CaptureFixture[str]
    ) -> None:
        email = new_email()
        operator_env(f"{GOOD_PASSWORD}\n")
        assert cli.main(["create-admin", "--email", email, "--name", "A", "--password-stdin"]) == 0
        operator_env(f"{GOOD_PASSWORD}\n")
        code = cli.main(["create-admin", "--email", email, "--name", "B", "--password-stdin"])
        assert code == 1
        assert "already exists" in capsys.readouterr().err

    def test_the_password_is_never_an_argument(self, operator_env: Callable[[str], None]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(
                ["create-admin", "--email", new_email(), "--name", "A", "--password", "secret"]
            )
        assert exit_info.value.code == 2

    def test_asks_twice_at_the_prompt(
        self,
        operator_env: Callable[[str], None],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        answers = iter([GOOD_PASSWORD, GOOD_PASSWORD + "-typo"])
        monkeypatch.setattr(sys, "stdin", _Terminal())
        monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
        code = cli.main(["create-admin", "--email", new_email(), "--name", "A"])
        assert code == 1
        assert "differ" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_cli(
    settings: Settings, keys: Path, *arguments: str, stdin: str
) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: its own process, input piped in, no terminal."""
    env = {
        **os.environ,
        "AUTH_ENVIRONMENT": "test",
        "AUTH_DATABASE_URL": settings.database_url,
        "AUTH_KEYS_DIR": str(keys),
        "AUTH_RSA_KEY_BITS": "2048",
    }
    return subprocess.run(
        [sys.executable, "-m", "auth_service.cli", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


class TestCreateAdminAsAProcess:
    async def test_a_piped_password_creates_an_admin_who_can_log_in(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        email = new_email()
        done = await asyncio.to_thread(
            _run_cli,
            settings,
            tmp_path,
            *("create-admin", "--email", email, "--name", "Root"),
            stdin=f"{GOOD_PASSWORD}\n",
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert GOOD_PASSWORD not in done.stdout + done.stderr
        async with serve_app(create_app(settings)) as client:
            login = await client.post(
                "/auth/login", json={"email": email, "password": GOOD_PASSWORD}
            )
        assert login.status_code == 200, login.text
        claims = jwt.decode(login.json()["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["admin"]

    @pytest.mark.parametrize(
        ("stdin", "flag"),
        [("", ()), ("\n", ("--password-stdin",))],
        ids=["nothing-piped", "empty-line-with-flag"],
    )
    def test_no_password_is_one_line_and_exit_code_2(
        self, settings: Settings, tmp_path: Path, stdin: str, flag: tuple[str, ...]
    ) -> None:
        email = new_email()
        done = _run_cli(
            settings,
            tmp_path,
            *("create-admin", "--email", email, "--name", "Root", *flag),
            stdin=stdin,
        )
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("create-admin: no password")


class TestKeyCommands:
    def test_migrate_creates_a_private_development_key_once(
        self, operator_env: Callable[[str], None], tmp_path: Path
    ) -> None:
        assert cli.main(["migrate"]) == 0
        assert cli.main(["migrate"]) == 0
        keys = tmp_path / "keys"
        metas = [json.loads(p.read_text()) for p in keys.glob("*.json")]
        assert len(metas) == 1
        assert metas[0]["origin"] == "development"
        pem = keys / f"{metas[0]['kid']}.pem"
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600

    def test_rotate_keys_adds_a_key_and_prunes_expired_ones(
        self,
        operator_env: Callable[[str], None],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        assert cli.main(["rotate-keys", "--now"]) == 0
        assert cli.main(["rotate-keys", "--now"]) == 0
        keys = tmp_path / "keys"
        metas = {p.stem: json.loads(p.read_text()) for p in keys.glob("*.json")}
        assert len(metas) == 2
        assert {m["origin"] for m in metas.values()} == {"operator"}
        assert "signs from" in capsys.readouterr().out
