"""Commands of the browser check as process groups of their own (`dagster dev`, `mlflow
server`, the pipeline run), their output in log files, stopped by PID with every descendant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lite_rec.config import PROJECT_ROOT
from tests.services import free_port, wait_until_healthy

VENV_BIN = Path(sys.executable).parent


@dataclass
class ProcessGroup:
    """A started command, the leader of its process group, with the URL it serves on (when it
    is a server) and its log file."""

    name: str
    process: subprocess.Popen
    url: str
    log_file: Path
    descendants: set[int] = field(default_factory=set)

    def wait_until_up(self, health_path: str, seconds: float) -> None:
        wait_until_healthy(self.url + health_path, self.process, seconds, self.log_file)
        self.remember_descendants()

    def wait(self, seconds: float) -> int:
        """The exit code; an AssertionError with the end of the log if it runs past `seconds`
        or fails."""
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            message = f"{self.name} still running after {seconds} s:\n{self.tail()}"
            raise AssertionError(message) from None
        if code != 0:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.tail()}")
        return code

    def tail(self, characters: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-characters:]

    def remember_descendants(self) -> None:
        """Note the PIDs below the leader now: one that leaves the group is still stopped."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.descendants |= {child.pid for child in children}

    def stop(self, seconds: float = 60) -> list[int]:
        """SIGTERM the process group, wait up to `seconds` for the leader and every descendant,
        SIGKILL what is left; returns the PIDs that had to be killed."""
        self.remember_descendants()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        processes = [] if self.process.poll() is not None else [psutil.Process(self.process.pid)]
        for pid in self.descendants:
            try:
                processes.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(processes, timeout=10)
        killed = []
        for process in alive:
            try:
                process.kill()
                killed.append(process.pid)
            except psutil.NoSuchProcess:
                continue
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # nothing of the group survives
        except ProcessLookupError:
            pass
        self.process.wait()
        return killed


def start(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> ProcessGroup:
    """`command` in the project root, in a new process group, with this interpreter's
    environment first on PATH; `{port}` in it becomes a free port of 127.0.0.1. SIGINT is given
    its default handler in the child: `dagster dev` handles SIGTERM as it handles SIGINT
    (shared/STACK.md), and a child of a background shell job would inherit SIGINT ignored."""
    port = free_port()
    log_file = log_dir / f"{name}.log"
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            cwd=PROJECT_ROOT,
            env={**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"},
            stdin=subprocess.DEVNULL,
            stdout=open(log_file, "wb"),  # noqa: SIM115 (lives with the process)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    return ProcessGroup(name, process, f"http://127.0.0.1:{port}", log_file)
