"""MOSES' metrics of a model's generated molecules, after every validation epoch and at test, to every logger."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl

from genlab.cache import cached
from genlab.callbacks.media import log_image
from genlab.callbacks.sequence_metrics import GeneratedSequenceMetrics
from genlab.settings import NonNegativeInt, PositiveFloat, PositiveInt

#: unique@k is reported for these k, as MOSES does (on fewer valid molecules when fewer were generated).
UNIQUE_AT = (1000, 10_000)
#: The judged score: validity x exp(-FCD / FCD_SCALE) (GuacaMol's FCD score is exp(-0.2 FCD)).
FCD_SCALE = 5.0


def valid_fcd_score(validity: float, fcd: float) -> float:
    """validity x exp(-FCD / 5), in [0, 1], higher is better; 0 when FCD is undefined (fewer than 2 valid)."""
    return validity * math.exp(-fcd / FCD_SCALE) if math.isfinite(fcd) else 0.0


def canonical_set(smiles: list[str], cache_dir: Path) -> set[str]:
    """The canonical SMILES of a set of molecules (the training set, for novelty), computed once, cached."""
    from genlab.data.smiles import canonical

    digest = hashlib.sha256("\n".join(smiles).encode()).hexdigest()[:20]
    return cached(
        cache_dir / "molecules" / f"canonical-{digest}.txt",
        build=lambda: {s for s in canonical(smiles) if s is not None},
        load=lambda path: set(path.read_text(encoding="utf-8").split()),
        save=lambda molecules, path: path.write_text("".join(f"{s}\n" for s in sorted(molecules)), encoding="utf-8"),
        what="canonical training molecules",
    ).value


class MoleculeMetrics(GeneratedSequenceMetrics):
    """Generates molecules and scores them as MOSES does (`genlab.metrics.chemistry`, `genlab.metrics.fcd`).

    `num_val_molecules` after every validation epoch and `num_molecules` at test, always from the same seed, so a
    metric depends on the weights alone; sampled at `temperature` (1: the model's own distribution, as MOSES
    samples). Logged per split: `validity`, `unique@1k`, `unique@10k`, `novelty` (as MOSES defines it: against the
    dataset's whole training split, whatever subset the run trained on), `unseen_in_training` (against the molecules
    the run trained on), `intdiv`, `filters`, `fcd` (against the split's first `num_reference` molecules, all by
    default) and `valid_fcd_score`; plus a grid of the first `drawn` molecules, valid ones first.

    Runs with these metrics are judged by `val/valid_fcd_score` (`judged_metric` below, read by `${judged:...}`).
    """

    judged_metric: ClassVar[str] = "val/valid_fcd_score"
    judged_mode: ClassVar[Literal["min", "max"]] = "max"
    option = "molecules"
    data_options = "data=moses or data=smiles"

    def __init__(
        self,
        num_molecules: PositiveInt = 10_000,
        num_val_molecules: PositiveInt = 1000,
        num_reference: PositiveInt | None = None,
        temperature: PositiveFloat = 1.0,
        batch_size: PositiveInt = 500,
        drawn: NonNegativeInt = 32,
        seed: int = 0,
        cache_dir: str = ".cache/genlab",
    ) -> None:
        from genlab.metrics.fcd import ChemNet

        super().__init__(num_molecules, num_val_molecules, temperature, None, batch_size, seed)
        self.num_reference = num_reference
        self.drawn = drawn
        self.cache_dir = Path(cache_dir).expanduser()
        self.chemnet = ChemNet()  # here, so a missing [chem] extra stops the run before any data is read
        self.training: set[str] | None = None
        self.training_split: set[str] = set()
        self.references: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def data_class(self) -> type:
        from genlab.data.molecules import MoleculeDataModule

        return MoleculeDataModule

    def _reference(self, trainer: pl.Trainer, split: str) -> Any:
        """The FCD statistics of the split's molecules (cached in cache_dir across runs)."""
        if split not in self.references:
            molecules = trainer.datamodule.items[split][: self.num_reference]
            self.references[split] = self.chemnet.reference_statistics(molecules, self.cache_dir)
            self.counts[f"num_reference_{split}"] = self.references[split].count
        return self.references[split]

    def _training_sets(self, trainer: pl.Trainer) -> tuple[set[str], set[str]]:
        """(the dataset's whole training split, the molecules this run trained on), for the two novelties.

        The whole split is taken as stored, as MOSES' novelty takes it (MOSES' files hold canonical SMILES, and
        canonicalizing its 1.58 M molecules would take RDKit a quarter of an hour), joined with the canonical SMILES
        of the molecules trained on, so that a file of non-canonical SMILES still counts them as seen.
        """
        if self.training is None:
            datamodule = trainer.datamodule
            self.training = canonical_set(datamodule.items["train"], self.cache_dir)
            self.training_split = set(datamodule.training_split) | self.training
            self.counts["num_training_split"] = len(datamodule.training_split)
            self.counts["num_trained_on"] = len(datamodule.items["train"])
        return self.training_split, self.training

    def _scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> dict[str, float]:
        from genlab.data.molecule_drawing import molecule_grid
        from genlab.metrics.chemistry import Generated, molecule_metrics, novelty
        from genlab.metrics.fcd import frechet_distance

        self.chemnet.device = pl_module.device
        reference, (training_split, trained_on) = self._reference(trainer, split), self._training_sets(trainer)
        smiles = [pl_module.tokenizer.to_smiles(text) for text in self._generate(pl_module, self.num_samples[split])]
        generated = Generated(smiles)
        values = molecule_metrics(generated, training_split, UNIQUE_AT, device=pl_module.device)
        values["unseen_in_training"] = novelty(generated, trained_on)
        statistics = self.chemnet.statistics(generated.canonical)
        values["fcd"] = frechet_distance(statistics, reference) if statistics is not None else math.nan
        values["valid_fcd_score"] = valid_fcd_score(values["validity"], values["fcd"])
        self.counts[f"num_generated_{split}"] = len(smiles)
        if self.drawn:
            grid = molecule_grid(smiles[: self.drawn])
            log_image(trainer.loggers, f"{split}/molecules", grid, trainer.global_step)
        return values

    def _test_line(self, values: dict[str, float]) -> str:
        return f"Molecules ({self.num_samples['test']} generated): {self.shown(values)}"

    def summary(self) -> dict[str, Any]:
        """What metrics.json records beside the numbers: the counts behind them and the sampling temperature."""
        return {"molecule_metrics": {**self.counts, "temperature": self.temperature}} if self.counts else {}
