"""Start, recognise and stop the stack's own processes.

Every service the stack starts gets a pidfile under ``<state_dir>/run/``. A pid alone is not proof:
pids are reused, so a process counts as ours only when it is alive (not a zombie) *and* its command
line contains a marker unique to this project (its data directory or config file path). ``down``
therefore never signals a stranger, even after a reboot recycled the pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class StackError(RuntimeError):
    """A stack operation failed; the message says what to do next."""


def log(message: str) -> None:
    """Progress output: stderr, so ``stack status`` stdout stays parseable."""
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def _proc_state(pid: int) -> str | None:
    """Single-letter state from /proc (R, S, Z...), or None when the pid does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect an exited child of this process so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to collect
        os.waitpid(pid, os.WNOHANG)


def is_ours(pid: int, marker: str) -> bool:
    _reap(pid)
    state = _proc_state(pid)
    return state is not None and state != "Z" and marker in cmdline(pid)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(pidfile: Path, marker: str) -> int | None:
    """The pid recorded in ``pidfile`` if that process is still ours (a read: nothing is removed)."""
    pid = read_pid(pidfile)
    return pid if pid is not None and is_ours(pid, marker) else None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive TCP ports nothing listens on (a cluster's listeners), below
    the kernel's ephemeral range, so no outgoing connection can hold one of them for a moment."""
    low, high = ephemeral_ports()
    scan = count + 2000
    if low - 1024 > 2 * scan:
        start = random.randrange(max(1024, low - 12_000), low - scan)
    elif 65535 - high > 2 * scan:
        start = random.randrange(high + 1, 65535 - scan)
    else:  # the whole range is ephemeral: nothing better than any free run
        start = random.randrange(1024, 65535 - scan)
    for base in range(start, start + 2000):
        if not any(port_open(host, base + i, 0.05) for i in range(count)):
            return base
    raise StackError(f"no {count} consecutive free TCP ports from {start}")


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def check_port_free(host: str, port: int, service: str, config_key: str) -> None:
    """Fail early, naming the setting to change, when another program already listens on the port."""
    if port_open(host, port):
        env = "FLOWLENS_" + config_key.upper().replace(".", "__")
        raise StackError(
            f"{service}: port {host}:{port} is already in use by another program (not started by this stack). "
            f"Stop that program or choose another port: set {config_key} in flowlens.yaml or {env}=<port>."
        )


def spawn(
    argv: list[str],
    log_path: Path,
    pidfile: Path,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (own session, stdin closed, output appended to ``log_path``).

    ``user`` switches to that account first (needed for PostgreSQL, which refuses to run as root);
    the switch happens in the child, so the recorded pid is the service itself, not a wrapper.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no terminal signals; survives the CLI exiting
            user=user,
            group=user,
            extra_groups=[] if user else None,
            env=env,
            cwd=cwd,
            # Services must not inherit an ignored SIGTERM/SIGINT from a backgrounded shell.
            preexec_fn=restore_default_signals,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def restore_default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def stop(pidfile: Path, marker: str, name: str, sig: int = signal.SIGTERM, timeout: float = 60.0) -> bool:
    """Stop our process named by ``pidfile``; escalate to SIGKILL after ``timeout``. True if one was stopped."""
    pid = running_pid(pidfile, marker)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    log(f"stopping {name} (pid {pid})")
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(pid, marker):
            pidfile.unlink(missing_ok=True)
            return True
        time.sleep(0.1)
    log(f"{name} (pid {pid}) did not stop within {timeout:.0f}s; sending SIGKILL")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    _reap(pid)
    pidfile.unlink(missing_ok=True)
    return True


def start_and_wait(
    name: str,
    argv: list[str],
    log_path: Path,
    pidfile: Path,
    marker: str,
    ready: Callable[[], bool],
    timeout: float,
    user: str | None = None,
) -> int:
    """Spawn a service, then wait for ``ready``; fail fast (with its log) if it dies meanwhile."""
    pid = spawn(argv, log_path, pidfile, user=user)
    wait_until(ready, name, timeout, alive=lambda: is_ours(pid, marker), log_path=log_path)
    return pid


def wait_running(name: str, pid: int, marker: str, ready: Callable[[], bool], timeout: float, log_path: Path) -> None:
    """A service of ours is already running: it may still be starting (an earlier ``up`` timed out)."""
    if ready():
        log(f"{name}: already running (pid {pid})")
        return
    wait_until(ready, name, timeout, alive=lambda: is_ours(pid, marker), log_path=log_path)


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``check`` until true, printing progress; fail fast when ``alive`` says the process died."""
    start = time.monotonic()
    next_note = start + 5
    while True:
        if check():
            log(f"{what}: ready after {time.monotonic() - start:.1f}s")
            return
        now = time.monotonic()
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited during start-up. {tail_hint(log_path)}")
        if now - start > timeout:
            raise StackError(f"{what}: not healthy after {timeout:.0f}s. {tail_hint(log_path)}")
        if now >= next_note:
            log(f"{what}: waiting ({now - start:.0f}s)...")
            next_note = now + 5
        time.sleep(0.2)


def tail_hint(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"Last lines of {log_path}:\n  " + "\n  ".join(tail)


def running_as_root() -> bool:
    return os.geteuid() == 0


_APT_UPDATED = False


def ensure_apt_packages(needed: dict[str, str]) -> None:
    """Install Debian packages whose marker file (binary path) is missing. ``needed``: path -> package."""
    global _APT_UPDATED
    missing = sorted({pkg for path, pkg in needed.items() if not Path(path).exists() and not shutil.which(path)})
    if not missing:
        return
    if not running_as_root() or not shutil.which("apt-get"):
        raise StackError(
            f"missing Debian packages {', '.join(missing)}: install them "
            f"(sudo apt-get install -y {' '.join(missing)}) and run the command again."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _APT_UPDATED:
        log("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, stdout=subprocess.DEVNULL)
        _APT_UPDATED = True
    log(f"apt-get install {' '.join(missing)}")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise StackError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr[-2000:]}")
