"""Child processes that never outlive thrifty, however thrifty ends.

Three pieces, because no single one covers every way a process dies:
- the CLI turns SIGTERM and SIGHUP into KeyboardInterrupt (`exit_on_termination`), so the
  cleanup a Ctrl-C runs (stop the worker's process group, remove a partial output) also runs
  when a CI timeout or a container stop sends SIGTERM;
- every child gets a parent-death signal (`spawn_options`): when the CLI is killed with
  SIGKILL, the kernel sends SIGTERM to its direct children;
- an engine worker handles SIGTERM and watches its parent (`watch_parent`): on either it ends
  its whole process group (vLLM's EngineCore and workers, a launcher's ranks) before it exits.
  The watch is a thread because Python runs signal handlers only between bytecodes, and a
  worker can sit in one long torch call for minutes.
Standard library only: engine workers import this module.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

PR_SET_PDEATHSIG = 1
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
POLL_S = 0.2
SIGINT_GRACE_S = 10.0


def spawn_options(own_group: bool = True) -> dict:
    """Keyword arguments for subprocess.Popen/run: a child that gets SIGTERM when this process
    dies (Linux), in a process group of its own unless `own_group` is False (a child in the
    CLI's group gets the terminal's Ctrl-C with it; one in its own can be stopped as a whole).

    The parent-death signal follows the *thread* that starts the child: start children from
    the main thread, as thrifty does, or they are signalled when that thread ends.
    """
    return {"start_new_session": own_group, "preexec_fn": _parent_death_signal()}


def _parent_death_signal() -> Callable[[], None] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # loaded before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def run_child(command: list[str], grace_s: float = 60.0, **options) -> subprocess.CompletedProcess:
    """subprocess.run for a child that shares the terminal (thrifty running thrifty): it ends
    with this process, and when this one is interrupted it gets time to clean up first.

    After Ctrl-C the child got SIGINT too and is given a few seconds to stop by itself; after
    SIGTERM (or anything else) it gets SIGTERM; SIGKILL follows after `grace_s`.
    """
    proc = subprocess.Popen(command, text=True, **options, **spawn_options(own_group=False))
    try:
        out, err = proc.communicate()
    except BaseException as exc:
        ctrl_c = isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Terminated)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SIGINT_GRACE_S if ctrl_c else 0)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the worker and everything it started; SIGKILL what is left after a grace time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --- CLI side ----------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so every cleanup path runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


received: list[int] = []  # the termination signals this process got, for its exit code


def _raise_terminated(signum: int, frame) -> None:
    received.append(signum)
    for handled in _handled:  # a second signal must not break off the cleanup this one starts
        signal.signal(handled, _record_only)
    raise Terminated(signum)


def _record_only(signum: int, frame) -> None:
    received.append(signum)


_handled: list[int] = []


def exit_on_termination() -> None:
    """In the CLI's main thread: SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt).
    A signal already ignored stays ignored (SIGHUP under `nohup`)."""
    for signum in TERMINATION_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
            _handled.append(signum)


def exit_code(default: int) -> int:
    """128 + the signal number after a termination signal (the shell's convention)."""
    return 128 + received[0] if received else default


# --- worker side -------------------------------------------------------------------------


def watch_parent(grace_s: float = 5.0) -> None:
    """In an engine worker (main thread): once its parent is gone, or on SIGTERM (the
    parent-death signal, or the CLI stopping the job), end the worker's process group and exit.

    Without the handler SIGTERM would kill the worker at once and orphan its children. A rank
    under a launcher (torchrun) leads no group: it ends alone, and the launcher ends the rest.
    """
    parent, worker = os.getppid(), os.getpid()
    leads_group = os.getpgrp() == worker  # not under a launcher, whose group is its own

    def end(*_) -> None:
        if os.getpid() != worker:  # a forked child (an engine process) inherited the handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if leads_group:
            end_group(worker, grace_s)
        os._exit(128 + signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        end()

    signal.signal(signal.SIGTERM, end)
    threading.Thread(target=watch, name="thrifty-parent-watch", daemon=True).start()


def end_group(pgid: int, grace_s: float) -> None:
    """SIGTERM every other live process of the group; SIGKILL those still there after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        others = [pid for pid in group_members(pgid) if pid != os.getpid()]
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while others and time.monotonic() < deadline:
            time.sleep(POLL_S)
            others = [pid for pid in group_members(pgid) if pid != os.getpid()]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`, read from /proc."""
    return [pid for pid, state, group in _proc_stats() if group == pgid and state != "Z"]


def _proc_stats() -> Iterator[tuple[int, str, int]]:
    """(pid, state, process group) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))):
            yield int(entry), fields[0], int(fields[2])


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state, parent, process group, ...); the name may
    itself hold spaces and parentheses, hence the split at the last ')'. None: no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def is_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"  # no /proc entry to read: trust os.kill
