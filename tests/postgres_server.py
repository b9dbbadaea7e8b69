"""A PostgreSQL server of the test session's own, for the Optuna storage that sweeps on many machines share: Debian's
`postgresql` (.ci/run installs it), a fresh cluster in a scratch folder made and run as the `postgres` user, on a free
port of 127.0.0.1 with trust authentication, stopped and deleted afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from requires import program
from slurm_cluster import free_port


def as_postgres(*command: str | Path | None) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a database `genlab` on a server that runs while the block does. Its folder is a new one in the
    system's temporary folder: the `postgres` user cannot enter pytest's (they are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="genlab-postgres-"))
    data, port = folder / "data", free_port()
    shutil.chown(folder, "postgres", "postgres")
    as_postgres(program("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    as_postgres(program("pg_ctl"), "-D", data, "-o", options, "-l", folder / "server.log", "-w", "start")
    try:
        as_postgres(program("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "genlab")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/genlab"
    finally:
        as_postgres(program("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(folder)
