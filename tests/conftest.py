"""Shared helpers: compose configs, call the real entrypoints in this process (or as processes where that is the
point), the real datasets, one cache folder for the session."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from inprocess import Result, call_entrypoint, run_console_script
from offline import network_guard
from omegaconf import DictConfig, open_dict
from requires import data_dir, in_ci, skip_if_missing

from genlab.config import config_dir

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one test per core (pyproject's addopts): one thread each, so that they do not fight over
    # the cores; processes the tests start inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
OFFLINE = Path(__file__).resolve().parent / "offline"


#: What every in-process genlab-train of the tests adds: no progress bar, no model summary (tests read the output).
QUIET_TRAIN = ["callbacks.progress_bar=null", "trainer.enable_model_summary=false"]


#: One 8x8 digit in a picture: enlarged to 64 px (genlab.callbacks.media.MIN_IMAGE_SIZE), and its 2-px gap.
CELL = 8 * 8 + 2


#: A Transformer LM small enough for a test: one 16-wide layer, windows of 16 tokens, batches of 4, 2 val batches.
TINY_LM_NET = [
    "model=transformer",
    "model.net.n_layer=1",
    "model.net.n_head=2",
    "model.net.n_embd=16",
    "data.block_size=16",
    "data.batch_size=4",
    "data.val_batches=2",
]


#: One cache folder for every run of this test session: derived data (the FID feature classifier, BPE vocabularies)
#: is built once, not once per test. Tests of the caching itself use folders of their own.
SHARED_CACHE = Path(tempfile.mkdtemp(prefix="genlab-test-cache-"))
atexit.register(shutil.rmtree, SHARED_CACHE, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked by tests/requires.py skip, before their fixtures are set up, when what they need is missing."""
    skip_if_missing(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true a skipped test fails (tests/requires.py): CI runs everything, so nothing missing can hide."""
    report = (yield).get_result()
    fail_skip_in_ci(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The same for a module skipped as a whole (`pytest.importorskip` at its top)."""
    fail_skip_in_ci((yield).get_result())


def fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: skipping is a failure in CI ({reason})"


network_guard.install()


@pytest.fixture(autouse=True)
def no_network_access():
    """Fail any test that tried to open a network connection (they are refused, and recorded, all along)."""
    network_guard.ATTEMPTS.clear()
    yield
    attempts, network_guard.ATTEMPTS[:] = list(network_guard.ATTEMPTS), []
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture
def compose_config(tmp_path: Path) -> Iterator:
    """compose_config(*overrides) -> the composed train config, with Hydra's runtime set as in a real run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):

        def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = str(tmp_path / "run")
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg)
            return cfg

        yield _compose
    GlobalHydra.instance().clear()


class TrainCall:
    """The result of one `genlab-train` call and the run folders it created."""

    def __init__(self, result: Result, log_dir: Path, before: set[Path]) -> None:
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.new_dirs = sorted(set(run_dirs(log_dir)) - before)

    @property
    def dir(self) -> Path:
        assert len(self.new_dirs) == 1, f"expected one new run folder, got {self.new_dirs}\n{self.stderr[-3000:]}"
        return self.new_dirs[0]

    @property
    def metrics(self) -> dict:
        return json.loads((self.dir / "metrics.json").read_text())

    def check(self) -> TrainCall:
        assert self.returncode == 0, f"genlab-train failed:\n{self.stdout[-2000:]}\n{self.stderr[-4000:]}"
        return self


def run_dirs(log_dir: Path) -> list[Path]:
    return [p.parent for p in log_dir.glob("train/*/*/.hydra")] + [p.parent for p in log_dir.glob("train/*/*/*/.hydra")]


def train_env(log_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(GENLAB_LOG_DIR=str(log_dir), GENLAB_CACHE_DIR=str(SHARED_CACHE), PYTHONWARNINGS="ignore")
    # Processes the tests start refuse network connections too (tests/offline/sitecustomize.py).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OFFLINE), env.get("PYTHONPATH", "")) if p)
    if data_dir() is not None:
        env["GENLAB_DATA_DIR"] = str(data_dir())
    return env


@pytest.fixture
def genlab_train(tmp_path: Path):
    """genlab_train(*overrides, env=None) calls the `genlab-train` entrypoint in this process, in a scratch folder.

    `genlab_train.process(*overrides, timeout=...)` runs the installed console script instead, for tests where the
    process itself is the point.
    """
    log_dir = tmp_path / "outputs"

    def _run(*overrides: str, env: dict[str, str] | None = None) -> TrainCall:
        before = set(run_dirs(log_dir))
        result = call_entrypoint(
            "genlab-train", list(overrides), cwd=tmp_path, env={**train_env(log_dir), **(env or {})}
        )
        return TrainCall(result, log_dir, before)

    def _process(*overrides: str, env: dict[str, str] | None = None, timeout: float = 300) -> TrainCall:
        before = set(run_dirs(log_dir))
        result = run_console_script(
            "genlab-train", list(overrides), cwd=tmp_path, env={**train_env(log_dir), **(env or {})}, timeout=timeout
        )
        return TrainCall(result, log_dir, before)

    _run.log_dir = log_dir
    _run.process = _process
    return _run
