"""tests/containers/engine.sh on this machine, without starting an engine: its lookups and its
clean-up must not stop half-way when there is nothing to find.

Under ``set -o pipefail`` a grep that matches nothing fails its whole pipeline, and ``set -e``
then ends the script without a word: the mirror lookup did that on a machine with no
``/etc/apt/sources.list``, and ``down`` did it when dockerd had left no iptables rule, leaving
the engine's data behind.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "containers" / "engine.sh"


def test_the_mirror_lookup_never_fails_the_script(tmp_path: Path) -> None:
    # The function alone, under the script's own options, with sources that do not exist.
    script = (
        "set -Eeuo pipefail\n"
        + _function("host_mirror").replace("/etc/apt/", f"{tmp_path}/")
        + '\nmirror=$(host_mirror)\necho "found:${mirror}"\n'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "found:"


def test_down_removes_the_data_of_a_daemon_that_already_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "engine" / "data" / "overlay2").mkdir(parents=True)
    (state / "engine" / "data" / "overlay2" / "layer").write_text("x")
    exited = subprocess.Popen(["true"])
    exited.wait()
    (state / "engine" / "started").write_text(f"{exited.pid}\n")
    (state / "base-imported").touch()

    result = subprocess.run(
        ["bash", str(ENGINE), "down"],
        env={**os.environ, "ENGINE_STATE": str(state), "DEBIAN_MIRROR": "http://mirror.invalid"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "failed at line" not in result.stderr
    assert not (state / "engine").exists()
    assert not (state / "base-imported").exists()


def _function(name: str) -> str:
    lines = ENGINE.read_text().splitlines()
    start = lines.index(f"{name}() {{")
    end = lines.index("}", start)
    return "\n".join(lines[start : end + 1])
