"""A one-node SLURM cluster on this machine, for the tests of the SLURM launcher: munged (as the munge user),
slurmctld and slurmd (as root) on free ports, their config, state and logs in a scratch folder, stopped afterwards.

Debian's `slurm-wlm` and `munge` (.ci/run installs them); the node is this host with its CPUs, no accounting
storage (submitit then warns that `sacct` has nothing and still reads the jobs' results from their folders).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MUNGE_SOCKET_DIR = Path("/run/munge")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def slurm_conf(folder: Path, host: str, cpus: int) -> str:
    paths = {name: folder / name for name in ("state", "spool", "run")}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return "\n".join(
        [
            "ClusterName=genlab-tests",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            f"StateSaveLocation={paths['state']}",
            f"SlurmdSpoolDir={paths['spool']}",
            f"SlurmctldPidFile={paths['run'] / 'slurmctld.pid'}",
            f"SlurmdPidFile={paths['run'] / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def munge_works() -> bool:
    try:
        encoded = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
        subprocess.run(["unmunge"], input=encoded, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def start_munge() -> subprocess.Popen | None:
    """munged as the munge user with the key the package made, unless one already answers."""
    if munge_works():
        return None
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "munge:munge", str(MUNGE_SOCKET_DIR)], check=True)
    if not Path("/etc/munge/munge.key").is_file():
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "-c"], check=True)
    daemon = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground"])
    wait_for(munge_works, "munged")
    return daemon


def wait_for(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up in {timeout} s")
        time.sleep(0.2)


@contextmanager
def slurm_cluster(folder: Path, cpus: int = 2) -> Iterator[dict[str, str]]:
    """The cluster's environment (SLURM_CONF) while it runs; every daemon it started is stopped afterwards."""
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = start_munge()
    daemons = [subprocess.Popen([name, "-D"], env=env) for name in ("slurmctld", "slurmd")]
    try:

        def idle() -> bool:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return state.stdout.strip() == "idle"

        wait_for(idle, "the SLURM node")
        yield {"SLURM_CONF": str(conf)}
    finally:
        for daemon in [*daemons, *([munge] if munge else [])]:
            daemon.terminate()
        for daemon in [*daemons, *([munge] if munge else [])]:
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
