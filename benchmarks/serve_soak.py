"""Soak test of genlab-serve: many mixed requests at a steady concurrency, then whether the servers stayed well.

Two `genlab-serve` processes on 127.0.0.1 (this script sends traffic nowhere else), a tiny image model and a tiny
language model, both wanting an API key. `--clients` clients send `--requests` requests in all, one after another,
of every kind a server meets: images, completions, streamed completions read to the end, streams dropped after
their first event, bad requests (400), and requests without the key or with a wrong one (401). Bounded: it stops
after `--requests` requests or `--seconds`, whichever comes first, and stops the servers it started.

What it reports: the answers by status (a 5xx is a failure of the server), the servers' resident memory after the
warm-up and at the end, and the latency percentiles of the first and last tenth of the requests.

    python benchmarks/serve_soak.py                       # trains the two tiny runs into outputs/serve_soak
    python benchmarks/serve_soak.py --requests 2000 --out soak.json

The machine should be otherwise idle for the latencies to mean much; the clients share it with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # a soak test targets this machine only
#: Tiny runs: the speed of the serving stack, not of a model, is what is measured.
TRAIN = {
    "image": "data=digits model=vae trainer.max_epochs=1 trainer.limit_train_batches=5 trainer.limit_val_batches=1 "
    "test=false metrics=none model.eval_iwae_k=0 callbacks.samples=null logger=csv",
    "text": "model=transformer data=python_source data.max_chars=20000 data.steps_per_epoch=5 data.block_size=32 "
    "model.net.n_layer=1 model.net.n_head=2 model.net.n_embd=32 trainer.max_epochs=1 data.val_batches=2 test=false "
    "metrics=none model.sample_tokens=8 callbacks.samples=null logger=csv",
}
SETTINGS = ["max_batch_size=8", "batch_timeout=0.005", "max_n=8", "max_tokens=64", "log_level=warning"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def train(kind: str, folder: Path) -> Path:
    run_dir = (folder / kind).resolve()
    if (run_dir / "metrics.json").is_file():
        return run_dir
    command = ["genlab-train", *shlex.split(TRAIN[kind]), f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null"]
    print(f"training the {kind} model: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return run_dir


def resident_mib(pid: int) -> float:
    """The process's resident memory (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """genlab-serve on a free port of 127.0.0.1 wanting `key`, for the length of a `with` block."""

    def __init__(self, run_dir: Path, key: str, log: Path, threads: int) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GENLAB_API_KEY": key}
        command = ["genlab-serve", f"run={run_dir}", "ckpt=last", f"host={HOST}", f"port={port}", *SETTINGS]
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
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def request(i: int) -> tuple[str, str, dict[str, Any] | bytes | None, str]:
    """The i-th request of the mix: (server, path, body, kind). One in ten of each kind but images (three)."""
    slot = i % 10
    if slot in (0, 1, 2):
        return "image", "/v1/images", {"n": 1 + i % 4, "seed": i}, "image"
    if slot == 3:
        return "image", "/v1/images", {"n": 2, "seed": i, "response_format": "png"}, "image grid"
    if slot == 4:
        return "text", "/v1/completions", {"prompt": "def ", "max_tokens": 16, "seed": i}, "completion"
    if slot == 5:
        return "text", "/v1/completions", {"prompt": "import", "max_tokens": 24, "seed": i, "stream": True}, "stream"
    if slot == 6:
        return "text", "/v1/completions", {"prompt": "x", "max_tokens": 64, "seed": i, "stream": True}, "dropped"
    if slot == 7:
        bad: list[Any] = [{"n": 0}, {"n": 99}, {"colour": "red"}, b'{"n": 2', [1, 2]]
        return "image", "/v1/images", bad[i % len(bad)], "bad request"
    if slot == 8:
        bad = [{"prompt": "a", "max_tokens": 10_000}, {"prompt": "a", "presence_penalty": 1}, {"prompt": "\u2603"}]
        return "text", "/v1/completions", bad[i % len(bad)], "bad request"
    return ("image", "text")[i // 10 % 2], "/info", None, "no key" if i // 20 % 2 else "wrong key"


async def one(http: dict[str, httpx.AsyncClient], key: str, i: int) -> tuple[str, int, float]:
    server, path, body, kind = request(i)
    headers = {"Authorization": f"Bearer {key}"}
    if kind == "no key":
        headers = {}
    elif kind == "wrong key":
        headers = {"Authorization": f"Bearer {key[:-1]}"}
    client = http[server]
    start = time.perf_counter()
    if path == "/info":
        status = (await client.get(path, headers=headers)).status_code
    elif isinstance(body, bytes):
        response = await client.post(path, content=body, headers={**headers, "content-type": "application/json"})
        status = response.status_code
    elif kind in ("stream", "dropped"):
        async with client.stream("POST", path, json=body, headers=headers) as response:
            status = response.status_code
            async for line in response.aiter_lines():
                if kind == "dropped" and line.startswith("data: "):
                    break  # the client goes away mid-stream: the server must stop decoding it
                if line.startswith("data: ") and '"error"' in line:
                    status = 500  # an error inside a stream is a failure of the server too
    else:
        status = (await client.post(path, json=body, headers=headers)).status_code
    return kind, status, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def soak(urls: dict[str, str], key: str, args: argparse.Namespace) -> dict[str, Any]:
    results: list[tuple[int, str, int, float]] = []
    issued = 0
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def client() -> None:
        nonlocal issued
        while issued < args.requests and time.monotonic() < deadline:
            i = issued
            issued += 1
            try:
                kind, status, seconds = await one(http, key, i)
            except httpx.HTTPError as exc:  # the server closed on us: as bad as a 5xx
                kind, status, seconds = f"transport error {type(exc).__name__}", 599, math.nan
            results.append((i, kind, status, seconds))

    http = {name: httpx.AsyncClient(base_url=url, timeout=120, limits=limits) for name, url in urls.items()}
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(args.clients)))
    finally:
        for each in http.values():
            await each.aclose()
    elapsed = time.perf_counter() - started
    results.sort()
    tenth = max(1, len(results) // 10)
    timed = [r for r in results if not math.isnan(r[3])]
    kinds = sorted({r[1] for r in results})

    def window(part: list[tuple[int, str, int, float]]) -> dict[str, float]:
        seconds = [r[3] for r in part if not math.isnan(r[3])]
        return {"p50_ms": 1000 * statistics.median(seconds), "p99_ms": 1000 * percentile(seconds, 0.99)}

    return {
        "requests": len(results),
        "seconds": elapsed,
        "requests_per_s": len(results) / elapsed,
        "statuses": dict(sorted(Counter(str(r[2]) for r in results).items())),
        "by_kind": {kind: dict(Counter(str(r[2]) for r in results if r[1] == kind)) for kind in kinds},
        "server_errors": sum(r[2] >= 500 for r in results),
        "first_tenth": window(timed[:tenth]),
        "last_tenth": window(timed[-tenth:]),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests in all")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=1800.0, help="stop after this long in any case")
    parser.add_argument("--threads", type=int, default=1, help="each server's torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--folder", type=Path, default=Path("outputs/serve_soak"), help="the runs, server logs")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    runs = {kind: train(kind, args.folder) for kind in ("image", "text")}
    key = f"sk-soak-{secrets.token_hex(16)}"
    with (
        Server(runs["image"], key, args.folder / "image_server.log", args.threads) as image,
        Server(runs["text"], key, args.folder / "text_server.log", args.threads) as text,
    ):
        urls = {"image": image.url, "text": text.url}
        warm_up = argparse.Namespace(**{**vars(args), "requests": 200})
        asyncio.run(soak(urls, key, warm_up))
        before = {"image": resident_mib(image.process.pid), "text": resident_mib(text.process.pid)}
        report = asyncio.run(soak(urls, key, args))
        after = {"image": resident_mib(image.process.pid), "text": resident_mib(text.process.pid)}
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as http:
            answers = {name: http.get(f"{url}/info").json()["answers"] for name, url in urls.items()}
    report.update(
        resident_mib_after_warm_up=before,
        resident_mib_at_end=after,
        resident_growth_mib={name: after[name] - before[name] for name in after},
        servers_counted=answers,
        clients=args.clients,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        command=" ".join(sys.argv),
    )
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if report["server_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
