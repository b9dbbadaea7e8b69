"""`hydra/launcher=processes`: each job of a sweep in a process of its own on this machine, `n_jobs` at a time.

joblib's loky pool (hydra/launcher=joblib) loses the whole batch when the kernel kills one worker (SIGKILL, out of
memory): loky stops every worker and the sweep ends with TerminatedWorkerError. Here a job that dies is one failed
job (genlab.dead_jobs) and the others run on. Jobs are forked from the sweep's process, so none pays Python's and
Lightning's imports again.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from collections.abc import Sequence
from contextlib import suppress
from multiprocessing.connection import Connection, wait
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from omegaconf import DictConfig

from genlab.dead_jobs import job_config, job_that_died, rebuilt_job_return

#: How long a job that was asked to stop (Ctrl-C or SIGTERM of the sweep) has to save its checkpoint.
STOP_GRACE_SECONDS = 60


def run_one(sender: Connection, job_num: int, overrides: Sequence[str], hydra_context: Any, config: DictConfig,
            task_function: Any, singleton_state: dict) -> None:  # fmt: skip
    """In the job's process: run it as Hydra's launchers do and send its JobReturn to the sweep."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = job_config(hydra_context, config, overrides, job_num)
    job_return = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                         job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip
    value = job_return._return_value  # an exception the job raised, or its value
    try:
        pickle.dumps(value)
    except Exception:
        value = RuntimeError(f"{type(value).__name__}: {value}")
    sender.send((job_return.status, value))


def cause_of_death(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        return f"its process was killed by {name} before it ended (the kernel's out-of-memory killer sends SIGKILL)"
    return f"its process ended with exit status {exit_code} before it returned a result"


def launch_in_processes(
    hydra_context: Any,
    config: DictConfig,
    task_function: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    n_jobs: int,
) -> list[JobReturn]:
    """Every job's JobReturn, in order; at most `n_jobs` processes at a time."""
    context = multiprocessing.get_context("fork")
    pending = list(enumerate(job_overrides))
    running: dict[int, tuple[Any, Connection]] = {}  # position -> (process, receiving end of its pipe)
    results: dict[int, JobReturn] = {}
    state = Singleton.get_state()
    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                position, overrides = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                arguments = (sender, initial_job_idx + position, overrides, hydra_context, config, task_function, state)
                process = context.Process(target=run_one, args=arguments, name=f"job {initial_job_idx + position}")
                process.start()
                sender.close()
                running[position] = (process, receiver)
            # A result is read as soon as it is sent (a large one would not fit the pipe), an exit when it happens.
            waiting = [receiver for position, (_, receiver) in running.items() if position not in results]
            ready = wait([*waiting, *(process.sentinel for process, _ in running.values())])
            for position, (process, receiver) in list(running.items()):
                if position not in results and (receiver in ready or process.sentinel in ready) and receiver.poll():
                    with suppress(EOFError):  # the job died while it sent
                        status, value = receiver.recv()
                        results[position] = rebuilt_job_return(
                            hydra_context, config, job_overrides[position], initial_job_idx + position, status, value
                        )
                if process.sentinel in ready:
                    process.join()
                    del running[position]
                    if position not in results:
                        overrides = job_overrides[position]
                        job_num = initial_job_idx + position
                        cause = cause_of_death(process.exitcode)
                        results[position] = job_that_died(hydra_context, config, overrides, job_num, cause)
    finally:
        for process, _ in running.values():  # the sweep was stopped: its jobs stop too, saving their checkpoints
            process.terminate()
        for process, _ in running.values():
            process.join(STOP_GRACE_SECONDS)
    return [results[position] for position in range(len(job_overrides))]
