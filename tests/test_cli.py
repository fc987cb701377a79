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


BAD_CONFIGURATIONS = [
    # (arguments after "serve", environment, the one line on stderr)
    ([], {"COLLAB_PORT": "abc"}, "collab: COLLAB_PORT: invalid int value: 'abc'"),
    (
        [],
        {"COLLAB_IDLE_TIMEOUT": "soon"},
        "collab: COLLAB_IDLE_TIMEOUT: invalid float value: 'soon'",
    ),
    ([], {"COLLAB_MEMORY": "maybe"}, "collab: COLLAB_MEMORY: invalid boolean value: 'maybe'"),
    (
        [],
        {"COLLAB_FSYNC": "sometimes"},
        "collab: COLLAB_FSYNC: must be one of always, interval, never, not 'sometimes'",
    ),
    (
        ["--fsync", "sometimes"],
        {},
        "collab: --fsync: must be one of always, interval, never, not 'sometimes'",
    ),
    (
        ["--port", "abc"],
        {},
        "collab: argument --port: invalid int value: 'abc' (see collab serve --help)",
    ),
    (["--port", "70000"], {}, "collab: --port: not a port number: 70000"),
    (
        [],
        {"COLLAB_PING_INTERVAL": "-1"},
        "collab: COLLAB_PING_INTERVAL: must be a number >= 0, not -1.0",
    ),
    (["--rate-bytes", "nan"], {}, "collab: --rate-bytes: must be a number >= 0, not nan"),
    (
        ["--log-level", "loud"],
        {},
        "collab: --log-level: must be one of debug, info, warning, error, not 'loud'",
    ),
    (["--jwt-secret", "short"], {}, "collab: --jwt-secret must be at least 32 bytes"),
    (
        ["--certfile", "cert.pem"],
        {},
        "collab: --certfile and --keyfile go together: give both or neither",
    ),
    (
        [],
        {"COLLAB_KEYFILE": "key.pem"},
        "collab: --certfile and --keyfile go together: give both or neither",
    ),
    (
        ["--certfile", "/nonexistent/cert.pem", "--keyfile", "/nonexistent/key.pem"],
        {},
        "collab: cannot use --certfile/--keyfile: [Errno 2] No such file or directory",
    ),
    (["--trusted-proxy", "10.0.0.0/33"], {}, "collab: --trusted-proxy: invalid CIDR '10.0.0.0/33'"),
    (
        [],
        {"COLLAB_TRUSTED_PROXY": "10.0.0.0/8,proxy.local"},
        "collab: COLLAB_TRUSTED_PROXY: invalid CIDR 'proxy.local'",
    ),
    (
        ["--base-path", "collab"],
        {},
        "collab: --base-path: must be a path like /collab, not 'collab'",
    ),
    (
        [],
        {"COLLAB_BASE_PATH": "/a/../b"},
        "collab: COLLAB_BASE_PATH: must be a path like /collab, not '/a/../b'",
    ),
]


def test_bad_configuration_exits_2_with_one_line(tmp_path):
    for args, env, line in BAD_CONFIGURATIONS:
        result = run_cli("serve", "--data-dir", str(tmp_path / "data"), *args, env=env)
        assert (result.returncode, result.stderr) == (2, line + "\n"), (args, env)
        assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_a_bad_certificate_is_refused_in_one_line(tmp_path):
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    args = ["--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "cert.pem")]
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("collab: cannot use --certfile/--keyfile: [SSL")
    assert result.stderr.count("\n") == 1


def test_export_and_compact_ignore_bad_serve_variables(tmp_path):
    seed(tmp_path, "doc", "still readable")
    env = {"COLLAB_PORT": "abc", "COLLAB_FSYNC": "sometimes", "COLLAB_TRUSTED_PROXY": "x"}
    exported = run_cli("export", "doc", "--data-dir", str(tmp_path), env=env)
    assert (exported.returncode, exported.stdout) == (0, "still readable"), exported.stderr
    compacted = run_cli("compact", "--data-dir", str(tmp_path), env=env)
    assert compacted.returncode == 0, compacted.stderr


def test_open_access_on_a_public_address_is_warned_about(tmp_path):
    from tests.server import ServerProcess

    def warnings(*args: str) -> list[str]:
        with ServerProcess(tmp_path / f"data{len(args)}", *args) as server:
            server.stop()
            return [line for line in server.output().splitlines() if "WARNING" in line]

    (line,) = warnings("--host", "0.0.0.0")
    assert "access control is off on 0.0.0.0" in line
    assert "anyone who can reach port" in line and "can read and write every document" in line
    assert warnings() == []  # loopback (ServerProcess's default)
    assert warnings("--host", "0.0.0.0", "--jwt-secret", "s" * 32) == []
