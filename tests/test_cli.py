"""The command line: options and environment, export/compact, and `make run`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from pycrdt import Doc, Text

from collab import cli
from collab.storage.base import Record
from collab.storage.file import FileStore
from tests.server import ROOT, free_port
from tests.wait import eventually_sync


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def seed(root: Path, name: str, text: str) -> None:
    doc = Doc()
    doc.get("content", type=Text).insert(0, text)

    async def write() -> None:
        store = FileStore(root)
        log = store.log(name)
        await log.load()
        log.append(Record(doc.get_update()))
        await store.close()

    asyncio.run(write())


def test_help_documents_every_option_and_its_variable():
    out = run_cli("serve", "--help").stdout
    for option, _, _ in cli._OPTIONS:
        assert "--" + option.replace("_", "-") in out
        assert "COLLAB_" + option.upper() in out


def test_environment_sets_options_and_flags_win(monkeypatch):
    monkeypatch.setenv("COLLAB_PORT", "9123")
    monkeypatch.setenv("COLLAB_FSYNC", "always")
    config = cli._config(cli._parser().parse_args(["serve"]))
    assert (config.port, config.fsync) == (9123, "always")
    config = cli._config(cli._parser().parse_args(["serve", "--port", "9200"]))
    assert config.port == 9200


def test_bad_fsync_policy_is_refused():
    result = run_cli("serve", "--fsync", "sometimes")
    assert result.returncode != 0 and "--fsync" in result.stderr


def test_export_prints_the_text_without_a_server(tmp_path):
    seed(tmp_path, "my doc", "exported ✓")
    result = run_cli("export", "my doc", "--data-dir", str(tmp_path))
    assert result.returncode == 0 and result.stdout == "exported ✓"
    missing = run_cli("export", "nope", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and "no document" in missing.stderr


def test_compact_turns_logs_into_snapshots(tmp_path):
    seed(tmp_path, "a", "alpha")
    seed(tmp_path, "b/c", "beta")
    result = run_cli("compact", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.snap")) == ["a.snap", "b%2Fc.snap"]
    assert run_cli("export", "b/c", "--data-dir", str(tmp_path)).stdout == "beta"


def test_compact_refuses_while_a_server_holds_the_data_dir(tmp_path):
    seed(tmp_path, "a", "alpha")
    store = FileStore(tmp_path)
    with store.lock():
        result = run_cli("compact", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "in use" in result.stderr


def test_make_run_serves_healthz(tmp_path):
    port, data = free_port(), tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLAB_", "MAKE"))}
    command = ["make", "--no-print-directory", "run", f"PORT={port}", f"DATA_DIR={data}"]
    output = tmp_path / "make-run.log"
    with (
        output.open("wb") as log,
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        ) as proc,
    ):

        def healthz() -> bytes | None:
            if proc.poll() is not None:
                raise RuntimeError(f"make run exited {proc.returncode}: {output.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return r.read()
            except OSError:
                return None

        try:
            assert eventually_sync(healthz, 120, interval=0.2) == b"ok"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert (data / ".lock").exists()
