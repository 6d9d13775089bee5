"""Start a real thrifty command, interrupt it (Ctrl-C, SIGTERM or SIGKILL) mid-work, and find
every process it started, however deep, by a tag in their environment."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

TAG = "THRIFTY_TEST_TAG"


def start(args: list, log: Path, env: dict | None = None) -> subprocess.Popen:
    """`thrifty ARGS` with its output in `log`; its processes carry a tag of their own."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "thrifty", *map(str, args)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {}), TAG: tag},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.tag = tag
    proc.log = log
    return proc


def tagged(tag: str) -> dict[int, str]:
    """Live processes whose environment holds the tag: pid -> command line."""
    found = {}
    needle = f"{TAG}={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue
        if state != "Z":
            found[int(entry)] = command.decode(errors="replace")[:200]
    return found


def wait_for(condition, proc: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the interruption:\n{log_tail(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{log_tail(proc)}")
        time.sleep(0.2)


def running(proc: subprocess.Popen, fragment: str) -> bool:
    """Whether one of the command's processes has `fragment` in its command line."""
    return any(fragment in command for command in tagged(proc.tag).values())


def log_tail(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")[-3000:]


def interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user at a terminal."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0


def kill_and_check_nothing_left(proc: subprocess.Popen, sig: int = signal.SIGKILL,
                                timeout_s: float = 60) -> None:
    """Send `sig` to the CLI alone (its children get nothing from us) and assert that every
    process it started has ended within timeout_s."""
    started = tagged(proc.tag)
    assert len(started) > 1, f"the command had started no child yet: {started}"
    proc.send_signal(sig)
    proc.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while (left := tagged(proc.tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        for pid in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
    assert not left, f"left running after {signal.Signals(sig).name} of the CLI: {left}"


def job_log_says(runs: Path, log_name: str, text: str):
    """A condition: some run under `runs` has a job log `log_name` that contains `text`."""
    return lambda: any(text in log.read_text(errors="replace")
                       for log in Path(runs).glob(f"*/logs/{log_name}"))
