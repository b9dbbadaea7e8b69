"""Load test of genlab-serve: requests per second and p50/p99 latency at 1, 8 and 32 concurrent clients, for an
image model and a language model, with dynamic batching against without it.

Each (model, mode) gets its own `genlab-serve` process on 127.0.0.1 (this script sends traffic nowhere else); each
client count runs until `--requests` requests are answered or `--seconds` have passed, whichever comes first, after a
short warm-up. Modes: `batched` (max_batch_size=32, every pass padded to 32 rows, the default), `unpadded`
(max_batch_size=32, batch_invariant=false: passes as large as the batch) and `unbatched` (max_batch_size=1).

    python benchmarks/serve_load.py           # trains a DCGAN (MNIST) and the nanoGPT CPU net into outputs/serve_load
    python benchmarks/serve_load.py --image-run RUN --text-run RUN --seconds 30 --out serve_load.json

The machine must be otherwise idle for the numbers to mean anything; the client shares it with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # a load test targets this machine only
MODES = {
    "batched": ["max_batch_size=32"],
    "unpadded": ["max_batch_size=32", "batch_invariant=false"],
    "unbatched": ["max_batch_size=1"],
}
#: Small runs whose nets have the size of genlab's CPU recipes; their weights do not change the speed.
TRAIN = {
    "image": "experiment=dcgan_mnist trainer.max_steps=20 trainer.limit_val_batches=1 test=false "
    "metrics.num_real=64 metrics.num_fake=64",
    "text": "experiment=gpt_shakespeare_cpu trainer.max_steps=20 data.val_batches=2 test=false",
}


def request_body(kind: str, i: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The i-th request: one image, or a completion of `--max-tokens` tokens; each with its own seed."""
    if kind == "image":
        return "/v1/images", {"n": args.images, "seed": i}
    return "/v1/completions", {"prompt": "\n", "max_tokens": args.max_tokens, "temperature": 0.8, "seed": i}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def train(kind: str, overrides: str, folder: Path) -> Path:
    """A run of TRAIN's settings in `folder` (kept: --image-run/--text-run take it the next time)."""
    run_dir = (folder / kind).resolve()
    command = ["genlab-train", *shlex.split(overrides), f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null"]
    print(f"training the {kind} model: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return run_dir


class Server:
    """genlab-serve on a free port of 127.0.0.1, for the length of a `with` block."""

    def __init__(self, run_dir: Path, settings: list[str], threads: int, log: Path) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        command = ["genlab-serve", f"run={run_dir}", "ckpt=last", f"host={HOST}", f"port={port}", "log_level=warning"]
        command += settings
        self.log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"genlab-serve exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"genlab-serve did not start; see {self.log.name}")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


async def load(
    url: str, kind: str, clients: int, budget: int, seconds: float, args: argparse.Namespace, first: int
) -> dict[str, Any]:
    """`clients` clients sending one request after another until `budget` requests or `seconds` are spent; the
    requests' seeds count from `first`."""
    latencies: list[float] = []
    failures = 0
    issued = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued, failures
        while issued < budget and time.monotonic() < deadline:
            path, body = request_body(kind, first + issued, args)
            issued += 1
            start = time.perf_counter()
            response = await http.post(path, json=body)
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        before = (await http.get("/info")).json()["batches"]
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        after = (await http.get("/info")).json()["batches"]
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "rows_per_pass": (after["rows"] - before["rows"]) / max(1, after["passes"] - before["passes"]),
    }


def measure(kind: str, run_dir: Path, args: argparse.Namespace, logs: Path) -> list[dict[str, Any]]:
    results = []
    for mode in args.modes:
        with Server(run_dir, MODES[mode], args.threads, logs / f"{kind}_{mode}.log") as server:
            asyncio.run(load(server.url, kind, 4, 8, args.seconds, args, first=10**6))  # warm-up
            for clients in args.clients:
                result = asyncio.run(
                    load(server.url, kind, clients, args.requests, args.seconds, args, clients * 10**4)
                )
                results.append({"model": kind, "mode": mode, **result})
                print(
                    f"{kind:5s} {mode:9s} {clients:3d} clients: {result['requests_per_s']:8.1f} req/s  "
                    f"p50 {result['p50_ms']:8.1f} ms  p99 {result['p99_ms']:8.1f} ms  "
                    f"({result['requests']} requests, {result['failures']} failed, "
                    f"{result['rows_per_pass']:.1f} rows per pass)",
                    flush=True,
                )
    return results


def speedups(results: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput of each batched mode over unbatched, per model, at the largest client count."""
    top = max(r["clients"] for r in results)
    at_top = {(r["model"], r["mode"]): r["requests_per_s"] for r in results if r["clients"] == top}
    return {
        f"{model} {mode} / unbatched at {top} clients": rate / at_top[(model, "unbatched")]
        for (model, mode), rate in at_top.items()
        if mode != "unbatched" and (model, "unbatched") in at_top
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-run", type=Path, help="an image run folder (default: train one, see TRAIN)")
    parser.add_argument("--text-run", type=Path, help="a language-model run folder (default: train one)")
    parser.add_argument("--models", nargs="+", choices=["image", "text"], default=["image", "text"])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per client count")
    parser.add_argument("--seconds", type=float, default=30.0, help="and at most this long per client count")
    parser.add_argument("--images", type=int, default=1, help="images per image request")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--folder", type=Path, default=Path("outputs/serve_load"), help="trained runs, server logs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    runs = {"image": args.image_run, "text": args.text_run}
    results = []
    for kind in args.models:
        run_dir = runs[kind] or train(kind, TRAIN[kind], args.folder)
        results += measure(kind, run_dir, args, args.folder)
    report = {"results": results, "speedups": speedups(results), "command": " ".join(sys.argv)}
    for name, factor in report["speedups"].items():
        print(f"{name}: {factor:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
