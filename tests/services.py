"""Real services for the tests, started the way docker/compose.yaml configures them: a
PostgreSQL cluster of Debian's `postgresql` package under a temporary folder (loopback, a free
port, password authentication), its roles and databases made by docker/postgres-init.sh, and
the compose file's own `mlflow server` command and environment."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
POSTGRES_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_missing_reason() -> str | None:
    """Why this machine cannot run the PostgreSQL tier, or None when it can."""
    if not POSTGRES_BINARIES:
        return (
            "PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian's "
            "`postgresql` package (.ci/run does, as root)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` to start PostgreSQL as its own user"
    return None


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$` substitution."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name, "")
        if value:
            return value
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(substitute, text)


def compose_file(env: dict[str, str]) -> dict:
    """docker/compose.yaml with `env` substituted, as `docker compose config` reads it."""
    return yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), env))


def stack_settings(postgres_port: int, root: Path) -> dict[str, str]:
    """docker/.env for a stack on this machine: loopback, free ports, fresh passwords (with
    characters a URI must encode)."""
    return {
        "POSTGRES_SUPERUSER_PASSWORD": secrets.token_urlsafe(12),
        "DAGSTER_DB_PASSWORD": "d@g/" + secrets.token_urlsafe(12) + ":%",
        "MLFLOW_DB_PASSWORD": "m@l/" + secrets.token_urlsafe(12) + ":%",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(postgres_port),
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_BIND_ADDRESS": "127.0.0.1",
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "mlartifacts"),
        "MODEL_SERVER_PORT": str(free_port()),
        "MODEL_SERVER_BIND_ADDRESS": "127.0.0.1",
        "LITE_REC_MODEL": "lite_rec_raw",  # the dataset folder of the tests' pipeline run
    }


class PostgresCluster:
    """A throw-away cluster: `initdb`, then `postgres` on 127.0.0.1 only; stopped by PID."""

    def __init__(self) -> None:
        self.bin = POSTGRES_BINARIES[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="lite-rec-pg-"))
        self.data, self.socket_dir = self.root / "data", self.root / "socket"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def start(self) -> PostgresCluster:
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        os.chmod(self.root, 0o755)
        subprocess.run(
            self._as_postgres(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ),
            check=True,
            capture_output=True,
        )
        self.process = subprocess.Popen(
            self._as_postgres(
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "postgres.log", "wb"),  # noqa: SIM115 (lives with the server)
        )
        deadline = time.monotonic() + 30
        while not (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "postgres.log").read_text())
            time.sleep(0.1)
        return self

    def superuser_env(self) -> dict[str, str]:
        """libpq settings for the superuser over the local socket (what the postgres image's
        entrypoint gives docker-entrypoint-initdb.d scripts)."""
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": "postgres"}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # postgres's "smart" shutdown, then fast after 20 s
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_service(
    service: dict, env: dict[str, str], log_file: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """A compose service's `command`, with its `environment`, as a process group; its
    programs (`mlflow`, `uvicorn`) from this interpreter's environment, as in the image."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.Popen(
        service["command"].split(),
        env={
            **os.environ,
            **{k: str(v) for k, v in service["environment"].items()},
            "PATH": path,
            **env,
        },
        stdout=open(log_file, "wb"),  # noqa: SIM115 (lives with the server)
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=cwd,
    )


def stop_process_group(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM a service's process group by its PID; SIGKILL what is left after `seconds`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_healthy(
    url: str, process: subprocess.Popen, seconds: float = 90, log_file: Path | None = None
) -> None:
    """Until `url` answers 200; fails at once, with the end of `log_file`, if `process` exits."""
    deadline = time.monotonic() + seconds
    tail = lambda: log_file.read_text()[-3000:] if log_file else ""  # noqa: E731
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{tail()}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s:\n{tail()}")
