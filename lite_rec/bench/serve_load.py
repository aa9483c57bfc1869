"""`lite-rec bench serve-load`: load test of the model servers, `mlflow models serve` (the
pyfunc) against `lite-rec serve`, on the same registered model in a temporary sqlite MLflow
store, each started alone on a free 127.0.0.1 port and driven by N concurrent keep-alive
clients for a fixed time.

Without a model directory it prepares `source` and trains a model of the params.yaml sizes with
item ids only (`model.item_repr=id`, 2 epochs; scoring costs the same as text+id, whose item
table is computed once) through the library. Each request asks k=10 items for `rows` users
whose histories are drawn from the catalog (5 to 50 items). Every phase stops at `seconds` or
`max_requests`, whichever comes first. Writes results.md and results.json: throughput,
p50/p95/p99 latency, errors, the server's peak RSS (with its children) and the machine's load
average, since the clients share the machine with the server."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from lite_rec.bench.report import markdown_table
from lite_rec.bench.run import PeakMemory, output_folder, write_results
from lite_rec.config import PROJECT_ROOT, load_config
from lite_rec.tracking import Tracking

NAME = "lite_rec_serve_load"
VENV_BIN = Path(sys.executable).parent
SERVERS = ("mlflow models serve", "lite-rec serve")
log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadTest:
    """What one load test runs: the model, the phases and the servers' settings."""

    model_dir: Path | None = None  # a `lite-rec train` output; None: train one on `source`
    source: Path = PROJECT_ROOT / "data/raw/ml-latest-small"
    train_set: list[str] = dataclasses.field(default_factory=list)  # training overrides
    clients: list[int] = dataclasses.field(default_factory=lambda: [8, 32])  # per phase
    seconds: float = 30.0  # per phase
    max_requests: int = 100_000  # per phase
    warmup_seconds: float = 3.0
    rows: int = 1  # users per request
    mlflow_workers: int = 2  # as docker/compose.yaml
    workers: int = 1  # lite-rec serve workers
    serve_set: list[str] = dataclasses.field(default_factory=list)  # lite-rec serve --set
    servers: tuple[str, ...] = SERVERS


def registered_champion(test: LoadTest, tracking: Tracking, work: Path) -> Path:
    """Register `test.model_dir`, or a model trained here, as NAME@champion; its folder."""
    from lite_rec import registry
    from lite_rec.tracking import log_pyfunc

    if test.model_dir:
        with tracking.run("serve_load"):
            logged = log_pyfunc(test.model_dir, registered_model_name=NAME)
        client = tracking.client()
        client.set_registered_model_alias(NAME, registry.CHAMPION, logged.registered_model_version)
        return test.model_dir
    from lite_rec.pipeline import train_rec_model
    from lite_rec.prepare import prepare
    from lite_rec.sequences import load_sequences

    prepare(test.source, work / "processed")
    data = load_sequences(work / "processed")
    config = load_config(overrides=["model.item_repr=id", "train.epochs=2", *test.train_set])
    trained = train_rec_model(data, None, config, work / "model", tracking, progress=False)
    registry.register_and_gate(trained, data, NAME, tracking)
    return work / "model"


def request_bodies(model_dir: Path, rows: int, count: int = 500) -> list[bytes]:
    """`count` request bodies of `rows` users each, histories of 5 to 50 catalog ids (at most
    the catalog)."""
    item_ids = json.loads((model_dir / "catalog.json").read_text())["item_ids"]
    draw = random.Random(0)
    bodies = []
    for _ in range(count):
        records = [
            {"history": draw.sample(item_ids, min(len(item_ids), draw.randint(5, 50))), "k": 10}
            for _ in range(rows)
        ]
        bodies.append(json.dumps({"dataframe_records": records}).encode())
    return bodies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], port: int, log_file: Path) -> subprocess.Popen:
    """The server in its own process group, once /ping answers."""
    with open(log_file, "w") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}; see {log_file}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"{shlex.join(command)} did not answer /ping within 180 s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group by its PID, SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def client(port: int, bodies: list[bytes], until: float, budget: list, out: dict) -> None:
    """One keep-alive client: requests back to back until `until` or the shared budget ends;
    appends each latency (s) to out["latencies"], each failure to out["errors"]."""
    headers = {"Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    index = random.randrange(len(bodies))
    while time.monotonic() < until:
        with out["lock"]:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        index = (index + 1) % len(bodies)
        started = time.perf_counter()
        try:
            connection.request("POST", "/invocations", bodies[index], headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or b"predictions" not in body:
                out["errors"].append(f"HTTP {response.status}: {body[:200]!r}")
                continue
        except (OSError, http.client.HTTPException) as error:
            out["errors"].append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        out["latencies"].append(time.perf_counter() - started)
    connection.close()


def drive(pid: int, port: int, bodies: list[bytes], clients: int, seconds: float, limit: int):
    """One phase: `clients` concurrent clients for `seconds` or `limit` requests in all."""
    out = {"latencies": [], "errors": [], "lock": threading.Lock()}
    budget = [limit]
    peak_load = os.getloadavg()[0]
    own = psutil.Process()
    cpu_before = own.cpu_times()
    started = time.monotonic()
    until = started + seconds
    threads = [
        threading.Thread(target=client, args=(port, bodies, until, budget, out))
        for _ in range(clients)
    ]
    with PeakMemory(pid) as server_memory:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak_load = max(peak_load, os.getloadavg()[0])
            time.sleep(0.5)
    elapsed = time.monotonic() - started
    cpu_after = own.cpu_times()
    latencies = np.array(out["latencies"]) * 1000
    percentile = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else None
    return {
        "clients": clients,
        "requests": len(latencies) + len(out["errors"]),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(50), 1) if percentile else None,
        "p95_ms": round(percentile(95), 1) if percentile else None,
        "p99_ms": round(percentile(99), 1) if percentile else None,
        "max_ms": round(float(latencies.max()), 1) if len(latencies) else None,
        "errors": len(out["errors"]),
        "first_errors": out["errors"][:3],
        "server_peak_rss_mb": round(server_memory.peak_mib),
        "client_cpu_s": round(
            (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system), 1
        ),
        "load_average_1m_peak": round(peak_load, 2),
    }


def server_command(server: str, test: LoadTest, uri: str, port: int) -> list[str]:
    if server == "mlflow models serve":
        return [
            *[str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion"],
            *["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            *["-w", str(test.mlflow_workers)],
        ]
    return [
        *[str(VENV_BIN / "lite-rec"), "serve", "--model", f"{NAME}@champion"],
        *["--tracking-uri", uri, "--port", str(port), "--workers", str(test.workers)],
        *[part for setting in test.serve_set for part in ("--set", setting)],
    ]


def load_markdown(results: dict) -> str:
    lines = [
        "# Model server load test",
        "",
        f"`{results['command']}`",
        "",
        f"{results['machine']}; load average (1, 5, 15 min) before the run: "
        f"{results['load_before']}, after: {results['load_after']}. The clients run on the same "
        "cores as the server; peak load is the highest 1-minute load average seen in a phase.",
        f"Each request: {results['rows']} user(s), k=10, histories of 5-50 catalog ids; "
        f"{results['seconds']} s per phase (at most {results['max_requests']} requests).",
        "",
    ]
    keys = ["server", "clients", "requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms"]
    keys += ["max_ms", "errors", "server_peak_rss_mb", "client_cpu_s", "load_average_1m_peak"]
    columns = ["server", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    columns += ["errors", "server peak RSS MB", "client CPU s", "peak load 1m"]
    rows = [[str(row[k]) for k in keys] for row in results["rows_measured"]]  # rounded already
    lines += markdown_table(columns, rows)
    lines += ["", "Server commands:", ""]
    lines += [f"- {name}: `{command}`" for name, command in results["servers"].items()]
    return "\n".join(lines) + "\n"


def run_load_test(
    test: LoadTest, out_dir: str | Path, command: str = "lite-rec bench serve-load"
) -> dict:
    """Every server of `test.servers` in turn: a warm-up phase of 4 clients, then one phase
    per client count; the servers are stopped by PID. -> results (also written to out_dir)"""
    out_dir = output_folder(out_dir)
    results = {
        "command": command,
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_before": [round(value, 2) for value in os.getloadavg()],
        "rows": test.rows,
        "seconds": test.seconds,
        "max_requests": test.max_requests,
        "servers": {},
        "rows_measured": [],
    }
    with tempfile.TemporaryDirectory(prefix="serve-load-") as work:
        work = Path(work)
        tracking = Tracking(f"sqlite:///{work / 'mlflow.db'}", "serve-load")
        bodies = request_bodies(registered_champion(test, tracking, work), test.rows)
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.resolved_uri}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow execs uvicorn
        for server in test.servers:
            port = free_port()
            command_line = server_command(server, test, tracking.resolved_uri, port)
            shown = shlex.join(command_line).replace(str(work), "$WORK")
            results["servers"][server] = shown.replace(f"{PROJECT_ROOT}/", "")
            log.info("starting %s", server)
            process = start(command_line, env, port, work / f"{server.split()[0]}.log")
            try:
                drive(process.pid, port, bodies, 4, test.warmup_seconds, test.max_requests)
                for clients in test.clients:
                    row = drive(process.pid, port, bodies, clients, test.seconds, test.max_requests)
                    results["rows_measured"].append({"server": server, **row})
                    log.info("%s", results["rows_measured"][-1])
            finally:
                stop(process)
    results["load_after"] = [round(value, 2) for value in os.getloadavg()]
    write_results(out_dir, results, load_markdown(results))
    return results
