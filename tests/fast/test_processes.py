"""Nothing outlives thrifty: a job's worker and everything it started end with the CLI, whether
the CLI gets SIGTERM or SIGKILL, and a partial output a killed run left is cleaned, not reused."""

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from thrifty.core import processes
from thrifty.core.errors import BadInput, ThriftyError
from thrifty.core.files import atomic_folder

# A worker that starts two grandchildren, one of which ignores SIGTERM (as a stuck engine
# process might), reports their ids, then works "forever".
WORKER = textwrap.dedent('''
    import json, subprocess, sys, time
    from thrifty.core.jobs import worker_main

    STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

    def work(params, events):
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]),
                subprocess.Popen([sys.executable, "-c", STUBBORN])]
        time.sleep(0.5)  # let the stubborn one install its handler
        with open(params["pids"], "w") as out:
            json.dump({"worker": __import__("os").getpid(), "kids": [k.pid for k in kids]}, out)
        events.progress("working", 1, None)
        time.sleep(600)
        return {}

    if __name__ == "__main__":
        worker_main({"work": work})
''')

# The CLI side, as a thrifty command runs a job.
DRIVER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from thrifty.core import jobs, processes

    processes.exit_on_termination()
    folder = Path(sys.argv[1])
    try:
        jobs.run_job(sys.executable, "sleepy_worker", "work", {"pids": str(folder / "pids.json")},
                     folder / "job", env={"PYTHONPATH": str(folder)})
    except KeyboardInterrupt:
        sys.exit(processes.exit_code(1))
''')


@pytest.fixture
def driver(tmp_path, isolated_home):
    """Start the driver; return (its process, the ids of the worker and its children)."""
    (tmp_path / "sleepy_worker.py").write_text(WORKER)
    (tmp_path / "driver.py").write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)])
    pids_file = tmp_path / "pids.json"
    deadline = time.monotonic() + 60
    while not pids_file.is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, "the driver ended before its worker started"
        time.sleep(0.1)
    pids = json.loads(pids_file.read_text())
    yield proc, [pids["worker"], *pids["kids"]]
    for pid in [proc.pid, pids["worker"], *pids["kids"]]:  # whatever a failed test left
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int], timeout_s: float = 30) -> list[int]:
    """The ids still alive after waiting up to timeout_s for all of them to end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if processes.is_alive(pid)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_sigkill_of_the_cli_ends_the_worker_and_its_children(driver):
    proc, pids = driver
    assert all(processes.is_alive(pid) for pid in pids)
    proc.kill()
    proc.wait()
    assert wait_gone(pids) == []


def test_sigterm_of_the_cli_stops_the_job_and_exits_143(driver):
    proc, pids = driver
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert wait_gone(pids, timeout_s=5) == []  # stopped before the CLI exited


def test_a_child_is_signalled_when_its_parent_is_killed(tmp_path):
    """The parent-death signal alone (thrifty serve's server, an engine build's pip)."""
    script = textwrap.dedent('''
        import subprocess, sys, time
        from thrifty.core import processes
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 **processes.spawn_options())
        print(child.pid, flush=True)
        time.sleep(600)
    ''')
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert wait_gone([child]) == []


def test_run_child_passes_sigterm_on_and_waits_for_the_child(tmp_path):
    marker = tmp_path / "cleaned"
    child = (f"import signal, sys, time, pathlib\n"
             f"def stop(*_): pathlib.Path({str(marker)!r}).write_text('x'); sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(600)")
    script = textwrap.dedent(f'''
        import subprocess, sys
        from thrifty.core import processes
        processes.exit_on_termination()
        try:
            processes.run_child([sys.executable, "-c", {child!r}])
        except KeyboardInterrupt:
            sys.exit(processes.exit_code(1))
    ''')
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"
    parent.terminate()
    assert parent.wait(timeout=60) == 143
    assert marker.read_text() == "x"  # the child ran its own cleanup before the parent left


def dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_partial_output_of_a_killed_run_is_removed_and_a_live_one_kept(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / f".out.partial-{dead_pid()}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    old = tmp_path / f".out.old-{dead_pid()}"
    old.mkdir()
    live_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.partial-{live_owner.pid}"
        live.mkdir()
        with atomic_folder(out) as tmp:
            (tmp / "done").write_text("yes")
        assert not stale.exists() and not old.exists()
        assert live.is_dir()  # another process may be writing it right now
    finally:
        live_owner.kill()
        live_owner.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out"])
    assert (out / "done").read_text() == "yes"


def test_group_members_lists_live_processes_of_a_group():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not processes.group_members(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes.group_members(child.pid) == [child.pid]
        assert os.getpid() not in processes.group_members(child.pid)
    finally:
        child.kill()
        child.wait()
    assert processes.group_members(child.pid) == []


DISK_FULL_WRITE = textwrap.dedent('''
    import sys
    from pathlib import Path
    from thrifty.core.errors import BadInput
    from thrifty.core.files import atomic_folder
    disk, output, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    try:
        with atomic_folder(output / "out") as tmp:
            (tmp / "config.json").write_text("{}")
            # the weights into the output, or a cache file on the full disk beside it
            target = tmp if output == disk else disk
            (target / "weights.bin").write_bytes(bytes(size))
    except BadInput as exc:
        print(exc)
    print(sorted(p.name for p in output.iterdir()))
''')


def write_on_a_full_disk(tmp_path, output, disk_kib: int = 256) -> tuple:
    """Run DISK_FULL_WRITE with a tmpfs of `disk_kib` at tmp_path/disk (twice that written), in
    a private mount namespace: (the disk, the error message, the output folder's listing)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    output = disk if output is None else output
    script = (f"mount -t tmpfs -o size={disk_kib}k none {disk} && "
              f"{sys.executable} -c {shlex.quote(DISK_FULL_WRITE)} {disk} {output} "
              f"{2 * disk_kib * 1024}")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if "mount" in done.stderr and done.returncode != 0:
        pytest.skip(f"no private tmpfs here: {done.stderr.strip()}")
    message, listing = done.stdout.strip().splitlines()
    return disk, message, listing


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare for a private tmpfs")
@pytest.mark.parametrize("disk_kib", [256, 96 * 1024], ids=["256KiB", "96MiB"])
def test_a_full_disk_removes_the_partial_output_and_says_how_much_was_written(tmp_path,
                                                                             disk_kib):
    """A real full disk: a tmpfs in a private mount namespace. Once the partial output is
    removed the bigger one has room again: it is still the disk that filled up."""
    disk, message, listing = write_on_a_full_disk(tmp_path, None, disk_kib)
    assert f"The disk holding {disk} filled up while thrifty wrote out" in message
    assert "MiB were written before it ran out" in message
    assert "partial output was removed" in message
    assert listing == "[]"  # no partial folder, no output


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare for a private tmpfs")
def test_a_full_disk_that_is_not_the_output_s_is_named(tmp_path):
    """The output's disk has room; a cache on another (full) disk does not."""
    output = tmp_path / "outputs"
    output.mkdir()
    disk, message, listing = write_on_a_full_disk(tmp_path, output)
    # a failed write names no file: the output's disk has room, so it is another one
    assert "Another disk filled up while thrifty made out" in message
    assert f"not the output's disk ({output}," in message
    assert "MiB were written" not in message  # the output's size says nothing here
    assert listing == "[]"


CRASHING_WORKER = textwrap.dedent('''
    import json, os, subprocess, sys, time
    from thrifty.core.jobs import worker_main

    def work(params, events):
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(params["pids"], "w") as out:
            json.dump({"kid": kid.pid}, out)
        os._exit(1)  # as an OOM kill or a segfault would end it: no cleanup of its own

    if __name__ == "__main__":
        worker_main({"work": work})
''')


def test_a_worker_that_dies_by_itself_leaves_none_of_its_children(tmp_path, isolated_home):
    from thrifty.core import jobs
    from thrifty.core.errors import WorkerFailed

    (tmp_path / "crashing_worker.py").write_text(CRASHING_WORKER)
    with pytest.raises(WorkerFailed):
        jobs.run_job(sys.executable, "crashing_worker", "work",
                     {"pids": str(tmp_path / "pids.json")}, tmp_path / "job",
                     env={"PYTHONPATH": str(tmp_path)})
    kid = json.loads((tmp_path / "pids.json").read_text())["kid"]
    assert wait_gone([kid], timeout_s=10) == []


def signalled_driver(tmp_path, cleanup_s: float, ignore_hup: bool = False) -> subprocess.Popen:
    """A CLI-like process whose cleanup after Terminated takes `cleanup_s`, then writes a mark."""
    script = textwrap.dedent(f'''
        import signal, sys, time, pathlib
        from thrifty.core import processes
        processes.exit_on_termination()
        try:
            print("ready", flush=True)  # inside: a signal may land before print returns
            time.sleep(600)
        except KeyboardInterrupt:
            time.sleep({cleanup_s})
            pathlib.Path({str(tmp_path / "cleaned")!r}).write_text("x")
            sys.exit(processes.exit_code(1))
    ''')
    hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore_hup else None
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            preexec_fn=hup)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_signal_does_not_break_off_the_cleanup(tmp_path):
    proc = signalled_driver(tmp_path, cleanup_s=1.0)
    proc.terminate()
    time.sleep(0.3)
    proc.terminate()  # as a CI runner sends SIGINT, then SIGTERM a few seconds later
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (tmp_path / "cleaned").read_text() == "x"


def test_an_ignored_sighup_stays_ignored_as_under_nohup(tmp_path):
    proc = signalled_driver(tmp_path, cleanup_s=0.0, ignore_hup=True)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None  # the terminal went away; the run goes on
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device", "/proc/thrifty-cache/blob"),
    ThriftyError("the 'quantize' job crashed: OSError: [Errno 28] No space left on device: "
                 "'/proc/thrifty-cache/blob'")], ids=["oserror", "engine-message"])
def test_a_full_disk_named_by_the_error_is_the_one_reported(tmp_path, error):
    """/proc stands for another filesystem than the output's."""
    with pytest.raises(BadInput) as raised, atomic_folder(tmp_path / "out"):
        raise error
    assert "The disk holding /proc/thrifty-cache/blob filled up while thrifty made out" in str(
        raised.value)
    assert not list(tmp_path.iterdir())


def test_a_quota_with_no_file_named_is_the_output_s_disk(tmp_path):
    """A quota can be hit on a disk with room: free space says nothing about which disk."""
    with pytest.raises(BadInput) as raised, atomic_folder(tmp_path / "out"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert f"The disk holding {tmp_path} filled up while thrifty wrote out" in str(raised.value)
