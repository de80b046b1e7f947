"""Leftovers of interrupted writes are removed at start-up as soon as they are surely dead, whatever their
age, and nothing else is: a temp file a live process is writing stays (its writer holds an flock on
it), and so does a download that can resume. The writers here are real processes, killed with SIGKILL
or left running, over the same store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from corral.store.models import ModelStore
from corral.store.paths import StorePaths, is_temp_blob, is_temp_manifest
from tests.faults.conftest import assert_consistent

WRITER = textwrap.dedent("""
    import sys
    from corral.store.models import ModelStore
    from corral.store.names import parse_name

    store = ModelStore(sys.argv[1])

    def chunks():
        yield b"x" * 100_000
        print("writing", flush=True)
        while sys.stdin.readline().strip() != "go":  # holds the upload open until told to finish
            pass
        yield b"y" * 100_000

    if sys.argv[2] == "blob":
        print(store.blobs.write(chunks())[0], flush=True)
    else:  # a manifest write that never ends: its temp file, locked
        from corral.store.locks import create_locked
        name = parse_name("held")
        store.paths.manifest(name).parent.mkdir(parents=True, exist_ok=True)
        fd, path = create_locked(lambda: store.paths.temp_manifest(name), 0o644)
        print("writing", flush=True)
        sys.stdin.readline()
""")


def writer(root, kind="blob") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), kind], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temp_files(root) -> list[str]:
    paths = StorePaths(root)
    blobs = [p.name for p in paths.blobs_dir.iterdir() if is_temp_blob(p.name)]
    manifests = [p.name for p in paths.manifests_dir.rglob("*") if is_temp_manifest(p.name)]
    return sorted(blobs + manifests)


def test_temp_files_of_killed_writers_go_at_start_up(tmp_path):
    root = tmp_path / "models"
    ModelStore(root)
    killed = [writer(root, "blob"), writer(root, "manifest")]
    for proc in killed:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    left = temp_files(root)
    assert len(left) == 2  # seconds old, not an hour

    removed = ModelStore(root).startup_prune()

    assert temp_files(root) == []
    assert sorted(os.path.basename(r) for r in removed) == left
    assert_consistent(root)


def test_temp_file_a_live_process_writes_stays(tmp_path):
    root = tmp_path / "models"
    ModelStore(root)
    live = writer(root, "blob")
    held_manifest = writer(root, "manifest")
    try:
        before = temp_files(root)
        assert len(before) == 2
        assert ModelStore(root).startup_prune() == []  # another server starting now
        assert temp_files(root) == before
        live.stdin.write("go\n")
        live.stdin.flush()
        digest = live.stdout.readline().strip()  # the upload finishes undisturbed
        assert live.wait(10) == 0
        assert ModelStore(root).blobs.path(digest).stat().st_size == 200_000
    finally:
        for proc in (live, held_manifest):
            proc.kill()
            proc.wait(10)


def test_resumable_download_stays_and_stale_record_temp_goes(tmp_path):
    root = tmp_path / "models"
    store = ModelStore(root)
    digest = "sha256:" + "ab" * 32
    store.paths.partial(digest).write_bytes(b"\0" * 100)
    store.paths.partial_part(digest, 0).write_text('{"N":0,"Offset":0,"Size":100,"Completed":40}')
    stale = store.paths.partial_part(digest, 0).with_name(store.paths.partial_part(digest, 0).name + ".tmp")
    stale.write_text('{"N":0,"Offset":0,"Size":100,"Completed":60}')

    assert store.startup_prune() == [stale.name]
    assert store.paths.partial(digest).exists() and store.paths.partial_part(digest, 0).exists()


def test_a_download_another_server_holds_is_left_alone(tmp_path):
    """Even a download whose blob is finished (normally a leftover) stays while its data file is locked."""
    root = tmp_path / "models"
    store = ModelStore(root)
    digest = store.blobs.write_bytes(b"done")
    data = store.paths.partial(digest)
    data.write_bytes(b"done")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(data)!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert data.name not in store.startup_prune()
        assert data.exists()
    finally:
        holder.kill()
        holder.wait(10)
    # the lock went with the process: now it is a leftover
    assert data.name in ModelStore(root).startup_prune()
