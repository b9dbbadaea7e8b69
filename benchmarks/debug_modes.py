"""Wall time of every saved experiment under every `debug=` mode, on the CPU: each `debug=` run should end within a
minute (docs/benchmarks.md#debug-runs). Each run is a real `genlab-train` process in a scratch folder, with
`trainer=cpu threads=1`; a run that fails is listed with its one-line error, one past `--timeout` as such.

    python benchmarks/debug_modes.py                                  # all experiments x fdr, limit
    python benchmarks/debug_modes.py --experiments vae_mnist flow_mnist --modes limit
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from genlab.config import config_dir

MODES = ("fdr", "limit", "overfit")


def experiments() -> list[str]:
    return sorted(path.stem for path in (config_dir() / "experiment").glob("*.yaml"))


def timed_run(experiment: str, mode: str, timeout: float, data_dir: str | None) -> tuple[float, str]:
    """(seconds, outcome) of one `genlab-train experiment=... debug=...` in a scratch folder."""
    command = [sys.executable, "-m", "genlab.train", f"experiment={experiment}", f"debug={mode}", "trainer=cpu"]
    command += ["threads=1", "callbacks.progress_bar=null", "logger=csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"GENLAB_DATA_DIR": data_dir} if data_dir else {})}
    with tempfile.TemporaryDirectory(prefix="genlab-debug-") as scratch:
        env["GENLAB_LOG_DIR"] = scratch
        start = time.perf_counter()
        try:
            process = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return time.perf_counter() - start, f"stopped after {timeout:.0f} s"
        seconds = time.perf_counter() - start
    if process.returncode == 0:
        return seconds, "ok"
    errors = [line for line in process.stderr.splitlines() if "error" in line.lower()]
    return seconds, (errors[-1] if errors else f"exit status {process.returncode}")[:140]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=None, help="default: every conf/experiment/*.yaml")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["fdr", "limit"])
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a run is stopped")
    parser.add_argument("--data-dir", default=os.environ.get("GENLAB_DATA_DIR"), help="default: $GENLAB_DATA_DIR")
    args = parser.parse_args()
    print("| experiment | " + " | ".join(f"debug={mode}" for mode in args.modes) + " |")
    print("|---|" + "---|" * len(args.modes))
    for experiment in args.experiments or experiments():
        cells = []
        for mode in args.modes:
            seconds, outcome = timed_run(experiment, mode, args.timeout, args.data_dir)
            cells.append(f"{seconds:.0f} s" + ("" if outcome == "ok" else f" ({outcome})"))
        print(f"| `{experiment}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
