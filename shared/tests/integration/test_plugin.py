"""The test plugin stops a run with a clear message when a server is missing, never skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class TestMissingServers:
    def test_unreachable_postgres_without_docker_stops_the_run_saying_what_to_start(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "test_needs_servers.py").write_text(
            "def test_uses_servers(infra):\n    assert infra.postgres_url\n"
        )
        env = {
            **os.environ,
            "TEST_POSTGRES_URL": "postgresql+asyncpg://postgres@127.0.0.1:1",
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # no engine to fall back on
        }
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        output = run.stdout + run.stderr
        assert run.returncode == 3, output
        assert "postgres: postgresql+asyncpg://postgres@127.0.0.1:1" in output
        assert "start it with: pg_ctlcluster" in output
        assert "skipped" not in output
