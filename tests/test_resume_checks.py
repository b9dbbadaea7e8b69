"""`resume=` is checked before Hydra starts, without torch or Lightning (genlab-train's promise to stay light), with
the same types the Trainer and SampleWriter take."""

from __future__ import annotations

import datetime
import inspect
import json
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

from omegaconf import OmegaConf

from genlab.run.layout import CHECKPOINTS, CONFIG_FILE, LAST
from genlab.run.resume import RESUMABLE
from genlab.validation import ROOT_SETTINGS

CHECKS = """
import json, sys
from genlab.errors import ConfigError
from genlab.run.resume import check_resume
folder, cases = sys.argv[1], json.loads(sys.argv[2])
answers = []
for arguments in cases:
    try:
        check_resume([f"resume={folder}", *arguments])
        answers.append("accepted")
    except ConfigError as exc:
        answers.append(str(exc))
heavy = [name for name in ("torch", "pytorch_lightning", "lightning_fabric") if name in sys.modules]
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def test_resume_checks_import_neither_torch_nor_lightning(compose_config, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / CONFIG_FILE).parent.mkdir(parents=True)
    cfg = compose_config("data=digits")
    OmegaConf.save(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), folder / CONFIG_FILE)
    (folder / CHECKPOINTS).mkdir()
    with zipfile.ZipFile(folder / CHECKPOINTS / f"{LAST}.ckpt", "w") as archive:
        archive.writestr("data.pkl", b"")  # a whole zip: what check_checkpoint_file looks for
    cases = [
        ["trainer.max_epochs=3", "callbacks.samples.every_n_epochs=2", "test=false"],
        ["trainer.max_epochs=abc"],
        ["callbacks.samples.every_n_epochs=0"],
        ["model.latent_dim=3"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", CHECKS, str(folder), json.dumps(cases)], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    accepted, wrong_type, out_of_range, unsafe = result["answers"]
    assert accepted == "accepted"
    assert wrong_type == "trainer.max_epochs='abc' is not allowed: expected an integer or null"
    assert out_of_range == "callbacks.samples.every_n_epochs=0 is not allowed: expected an integer > 0"
    assert unsafe.startswith("resume= continues a run with its own config, so model.latent_dim cannot change")


def options(annotation: object) -> set[object]:
    return set(typing.get_args(annotation)) or {annotation}


def test_the_resumable_settings_have_the_types_of_the_arguments_they_set() -> None:
    import pytorch_lightning as pl

    from genlab.callbacks.samples import SampleWriter

    trainer = inspect.signature(pl.Trainer).parameters
    for key, annotation in RESUMABLE.items():
        if key.startswith("trainer."):
            real = options(trainer[key.removeprefix("trainer.")].annotation) - {datetime.timedelta}  # not in YAML
            assert options(annotation) == real, key
    samples = typing.get_type_hints(SampleWriter.__init__, include_extras=True)["every_n_epochs"]
    assert RESUMABLE["callbacks.samples.every_n_epochs"] == samples
    assert RESUMABLE["test"] == ROOT_SETTINGS["test"]
