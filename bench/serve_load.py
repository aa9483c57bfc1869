"""Load test of the model servers: `mlflow models serve` (the pyfunc) against `lite-rec serve`,
on the same registered model in a temporary sqlite MLflow store, each started alone on a free
127.0.0.1 port and driven by N concurrent keep-alive clients for a fixed time.

    .venv/bin/python bench/serve_load.py                    # trains on data/raw/ml-latest-small
    .venv/bin/python bench/serve_load.py --model-dir models/ml-latest-small --seconds 10

Without --model-dir it prepares data/raw/ml-latest-small and trains a model of the params.yaml
sizes with item ids only (`model.item_repr=id`, 2 epochs; scoring costs the same as text+id,
whose item table is computed once) through the library. Each request asks k=10 items for
`--rows` users whose histories are drawn from the catalog (5 to 50 items). Every phase stops
at `--seconds` or `--max-requests`, whichever comes first. Writes results.md and results.json
to --out: throughput, p50/p95/p99 latency, errors, the server's peak RSS (with its children)
and the machine's load average, since the clients share the machine with the server."""

import argparse
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from lite_rec.config import PROJECT_ROOT, load_config  # noqa: E402
from lite_rec.tracking import Tracking  # noqa: E402

NAME = "lite_rec_serve_load"
VENV_BIN = Path(sys.executable).parent
log = logging.getLogger("serve_load")


def registered_champion(args: argparse.Namespace, tracking: Tracking, work: Path) -> Path:
    """Register `--model-dir`, or a model trained here, as NAME@champion; its model folder."""
    from lite_rec import registry
    from lite_rec.tracking import log_pyfunc

    if args.model_dir:
        with tracking.run("serve_load"):
            logged = log_pyfunc(args.model_dir, registered_model_name=NAME)
        client = tracking.client()
        client.set_registered_model_alias(NAME, registry.CHAMPION, logged.registered_model_version)
        return args.model_dir
    from lite_rec.pipeline import train_rec_model
    from lite_rec.prepare import prepare
    from lite_rec.sequences import load_sequences

    prepare(args.source, work / "processed")
    data = load_sequences(work / "processed")
    config = load_config(overrides=["model.item_repr=id", "train.epochs=2", *args.set])
    trained = train_rec_model(data, None, config, work / "model", tracking, progress=False)
    registry.register_and_gate(trained, data, NAME, tracking)
    return work / "model"


def request_bodies(model_dir: Path, rows: int, count: int = 500) -> list[bytes]:
    """`count` request bodies of `rows` users each, histories of 5 to 50 catalog ids."""
    item_ids = json.loads((model_dir / "catalog.json").read_text())["item_ids"]
    draw = random.Random(0)
    bodies = []
    for _ in range(count):
        records = [
            {"history": draw.sample(item_ids, draw.randint(5, 50)), "k": 10} for _ in range(rows)
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


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


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
    peak_rss, peak_load = tree_rss(pid), os.getloadavg()[0]
    own = psutil.Process()
    cpu_before = own.cpu_times()
    started = time.monotonic()
    until = started + seconds
    threads = [
        threading.Thread(target=client, args=(port, bodies, until, budget, out))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak_rss = max(peak_rss, tree_rss(pid))
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
        "server_peak_rss_mb": round(peak_rss / 2**20),
        "client_cpu_s": round(
            (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system), 1
        ),
        "load_average_1m_peak": round(peak_load, 2),
    }


SERVERS = ("mlflow models serve", "lite-rec serve")


def server_command(server: str, args: argparse.Namespace, uri: str, port: int) -> list[str]:
    if server == "mlflow models serve":
        return [
            *[str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion"],
            *["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            *["-w", str(args.mlflow_workers)],
        ]
    return [
        *[str(VENV_BIN / "lite-rec"), "serve", "--model", f"{NAME}@champion"],
        *["--tracking-uri", uri, "--port", str(port), "--workers", str(args.workers)],
        *[part for setting in args.serve_set for part in ("--set", setting)],
    ]


def markdown(results: dict) -> str:
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
        "| server | clients | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| server peak RSS MB | client CPU s | peak load 1m |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in results["rows_measured"]:
        lines.append(
            f"| {row['server']} | {row['clients']} | {row['requests']} | {row['throughput_rps']} "
            f"| {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['max_ms']} "
            f"| {row['errors']} | {row['server_peak_rss_mb']} | {row['client_cpu_s']} "
            f"| {row['load_average_1m_peak']} |"
        )
    lines += ["", "Server commands:", ""]
    lines += [f"- {name}: `{command}`" for name, command in results["servers"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="a `lite-rec train` output")
    parser.add_argument("--source", type=Path, default=PROJECT_ROOT / "data/raw/ml-latest-small")
    parser.add_argument("--set", action="append", default=[], help="training override")
    parser.add_argument("--clients", default="8,32", help="concurrent clients per phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase (30)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per phase")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=1, help="users per request (1)")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="as docker/compose.yaml")
    parser.add_argument("--workers", type=int, default=1, help="lite-rec serve workers (1)")
    parser.add_argument("--serve-set", action="append", default=[], help="lite-rec serve --set")
    parser.add_argument("--only", choices=SERVERS, default=None, help="one server only")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench/results/serve_load")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    results = {
        "command": shlex.join(["bench/serve_load.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_before": [round(value, 2) for value in os.getloadavg()],
        "rows": args.rows,
        "seconds": args.seconds,
        "max_requests": args.max_requests,
        "servers": {},
        "rows_measured": [],
    }
    with tempfile.TemporaryDirectory(prefix="serve-load-") as work:
        work = Path(work)
        tracking = Tracking(f"sqlite:///{work / 'mlflow.db'}", "serve-load")
        bodies = request_bodies(registered_champion(args, tracking, work), args.rows)
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.resolved_uri}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow execs uvicorn
        for server in [args.only] if args.only else SERVERS:
            port = free_port()
            command = server_command(server, args, tracking.resolved_uri, port)
            shown = shlex.join(command).replace(str(work), "$WORK")
            results["servers"][server] = shown.replace(f"{PROJECT_ROOT}/", "")
            log.info("starting %s", server)
            process = start(command, env, port, work / f"{server.split()[0]}.log")
            try:
                drive(process.pid, port, bodies, 4, args.warmup_seconds, args.max_requests)
                for clients in [int(c) for c in args.clients.split(",")]:
                    row = drive(process.pid, port, bodies, clients, args.seconds, args.max_requests)
                    results["rows_measured"].append({"server": server, **row})
                    log.info("%s", results["rows_measured"][-1])
            finally:
                stop(process)
    results["load_after"] = [round(value, 2) for value in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
