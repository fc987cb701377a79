"""``/readyz``: 503 with a reason while the data directory cannot take writes, 200 after.

Each fault is made for real on a server process: a read-only file system, a
full one, a removed lock file. As root, ``chmod`` does not stop writes, so a
small tmpfs is mounted (and remounted read-only) instead; without root the
read-only case uses ``chmod`` and the full-disk case is skipped (failed in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess

import pytest

from collab import Config
from tests.mounts import ROOT_USER, mount, tmpfs
from tests.needs import require
from tests.server import ServerProcess
from tests.wait import eventually


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def ready(server: ServerProcess) -> tuple[int, str]:
    status, body = await in_thread(server.get, "/readyz")
    return status, body.decode()


async def answers(server: ServerProcess, status: int, part: str) -> bool:
    found = await ready(server)
    assert found[0] == status and part in found[1], found
    return True


async def unloaded(server: ServerProcess) -> bool:
    """No document is loaded (so no log file is open for writing)."""
    _, page = await in_thread(server.get, "/metrics")
    assert b"\ncollab_documents_loaded 0.0\n" in page, "a document is still loaded"
    return True


@pytest.mark.timeout(seconds=90)
async def test_a_read_only_data_dir_is_not_ready_until_writable_again(tmp_path):
    if ROOT_USER:
        stack = contextlib.ExitStack()
        data = stack.enter_context(tmpfs(tmp_path / "mnt", "8m")) / "data"

        def break_it() -> None:
            assert mount("-o", "remount,ro", str(data.parent)).returncode == 0

        def mend_it() -> None:
            assert mount("-o", "remount,rw", str(data.parent)).returncode == 0
    else:
        stack, data = contextlib.ExitStack(), tmp_path / "data"

        def break_it() -> None:
            data.chmod(0o555)

        def mend_it() -> None:
            data.chmod(0o755)

    with stack:
        server = ServerProcess(data, "--idle-timeout", "0.2", "--min-free-bytes", "0")
        server.log_path = tmp_path / "server.log"  # not on the file system made read-only
        await in_thread(server.start)
        try:
            assert await ready(server) == (200, "ready")
            assert await in_thread(server.request, "PUT", "/api/docs/d/text", b"kept") == 204
            await eventually(lambda: unloaded(server))
            await in_thread(break_it)
            await eventually(lambda: answers(server, 503, "data directory not writable"), 15)
            status, _ = await in_thread(server.get, "/healthz")
            assert status == 200  # alive all the same: liveness is not readiness
            await in_thread(mend_it)
            await eventually(lambda: answers(server, 200, "ready"), 15)
            assert (await in_thread(server.get, "/api/docs/d/text"))[1] == b"kept"
        finally:
            await in_thread(mend_it)
            await in_thread(server.stop)


@pytest.mark.timeout(seconds=90)
async def test_a_nearly_full_disk_is_not_ready_until_space_is_freed(tmp_path):
    require(ROOT_USER, "filling a disk needs a small tmpfs, which needs root")
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        server = ServerProcess(mnt / "data", "--min-free-bytes", str(256 << 10))
        server.log_path = tmp_path / "server.log"
        await in_thread(server.start)
        try:
            assert await ready(server) == (200, "ready")
            filler = mnt / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (900 << 10))  # what some other program left
            await eventually(lambda: answers(server, 503, "disk nearly full"), 15)
            filler.unlink()
            await eventually(lambda: answers(server, 200, "ready"), 15)
        finally:
            await in_thread(server.stop)


@pytest.mark.timeout(seconds=90)
async def test_a_removed_lock_file_is_not_ready_until_the_lock_is_held_again(tmp_path):
    server = ServerProcess(tmp_path / "data")
    await in_thread(server.start)
    try:
        assert await ready(server) == (200, "ready")
        (tmp_path / "data" / ".lock").unlink()
        await eventually(lambda: answers(server, 503, "store lock lost: .lock was removed"), 15)
        await eventually(lambda: answers(server, 200, "ready"), 15)  # taken again
        second = ServerProcess(tmp_path / "data")
        with pytest.raises(RuntimeError, match="in use by another collab process"):
            await in_thread(second.start)  # the lock is real again: a second server is refused
    finally:
        await in_thread(server.stop)
    assert "store lock lost" in server.output()


@pytest.mark.timeout(seconds=30)
async def test_a_replaced_lock_file_held_by_another_process_stays_not_ready(tmp_path):
    server = ServerProcess(tmp_path / "data")
    await in_thread(server.start)
    other = None
    try:
        lock = tmp_path / "data" / ".lock"
        require(shutil.which("flock") is not None, "needs util-linux flock")
        lock.unlink()
        # Someone else makes a new lock file and holds it: taking it again must fail.
        other = subprocess.Popen(
            ["flock", "--exclusive", str(lock), "sleep", "60"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(lambda: lock.exists())  # /readyz is not asked before: nothing probed

        async def refused_again() -> bool:
            assert await answers(server, 503, "store lock lost: .lock was replaced")
            assert server.output().count("cannot be taken again") >= 2, "one probe so far"
            return True

        await eventually(refused_again, 15)
    finally:
        if other is not None:
            other.kill()
            other.wait()
        await in_thread(server.stop)


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=None)


async def test_a_memory_store_is_always_ready(http_client, port) -> None:
    response = await http_client.fetch(f"http://127.0.0.1:{port}/readyz")
    assert (response.code, response.body) == (200, b"ready")
