"""Molecules end to end: SMILES/SELFIES tokenizers, whole-sequence batches, MOSES' metrics on sets with known answers,
FCD, the judged metric, genlab-train and genlab-sample on MOSES, and bad input as one line."""

from __future__ import annotations

import gzip
import math
import random
import sys

import pytest
from requires import extra_hint, require_data, requires_data

pytest.importorskip("rdkit", reason=extra_hint("chem"))
pytest.importorskip("fcd_torch", reason=extra_hint("chem"))
pytest.importorskip("selfies", reason=extra_hint("chem"))
import torch
from conftest import QUIET_TRAIN, train_env
from inprocess import call_entrypoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genlab.config import judged_by
from genlab.data import smiles as smiles_module
from genlab.data.molecules import MoleculeDataModule, read_smiles
from genlab.data.sequences import IGNORE, WholeSequences, split_corpus
from genlab.data.smiles import SelfiesTokenizer, SmilesTokenizer
from genlab.data.tokenizers import tokenizer_from_state
from genlab.errors import DataError
from genlab.metrics import chemistry
from genlab.metrics.fcd import ChemNet, frechet_distance

TRICKY = {
    "C[C@@H](N)C(=O)[O-]": ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "[O-]"],
    "C[NH3+]": ["C", "[NH3+]"],
    "F/C=C\\Cl": ["F", "/", "C", "=", "C", "\\", "Cl"],
    "c1cc[nH]c1Br": ["c", "1", "c", "c", "[nH]", "c", "1", "Br"],
    "C%10CCCCC%10": ["C", "%10", "C", "C", "C", "C", "C", "%10"],
    "C%(123)CC%(123)": ["C", "%(123)", "C", "C", "%(123)"],
    "[13CH3][2H]": ["[13CH3]", "[2H]"],
    "[Na+].[Cl-]": ["[Na+]", ".", "[Cl-]"],
}


def test_smiles_tokenizer_splits_atoms_bonds_and_ring_closures() -> None:
    for smiles, symbols in TRICKY.items():
        assert SmilesTokenizer.split(smiles) == symbols, smiles
    tokenizer = SmilesTokenizer.fit(SmilesTokenizer.split(s) for s in TRICKY)
    rebuilt = tokenizer_from_state(tokenizer.state())
    for smiles in TRICKY:
        ids = tokenizer.encode(smiles)
        assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]) == smiles
        assert rebuilt.encode(smiles) == ids and isinstance(rebuilt, SmilesTokenizer)
    with pytest.raises(DataError, match=r"symbol '\[Se\]' is outside the vocabulary"):
        tokenizer.encode("C[Se]C")


def test_selfies_round_trip_through_smiles() -> None:
    smiles = "C[C@@H](N)C(=O)[O-]"
    text = SelfiesTokenizer.from_smiles(smiles)
    symbols = SelfiesTokenizer.split(text)
    assert all(s.startswith("[") for s in symbols) and "".join(symbols) == text
    tokenizer = SelfiesTokenizer.fit([symbols])
    decoded = tokenizer.decode(tokenizer.encode(text))
    assert smiles_module.canonical([SelfiesTokenizer.to_smiles(decoded)]) == smiles_module.canonical([smiles])
    assert isinstance(tokenizer_from_state(tokenizer.state()), SelfiesTokenizer)


def test_whole_sequences_are_framed_padded_and_the_padding_ignored() -> None:
    tokenizer = SmilesTokenizer.fit([["C", "O", "N"]])
    sequences = [tokenizer.encode(s) for s in ("CCO", "N", "CCCCCN")]
    inputs, targets = WholeSequences(sequences, tokenizer).__getitems__([0, 1])
    assert inputs.shape == targets.shape == (2, 4), "cut to the longest sequence of the batch, not of the data"
    assert inputs[:, 0].tolist() == [tokenizer.bos_id] * 2
    assert targets[0].tolist() == [*tokenizer.encode("CCO"), tokenizer.eos_id]
    assert targets[1].tolist() == [tokenizer.encode("N")[0], tokenizer.eos_id, IGNORE, IGNORE]
    assert torch.equal(inputs[:, 1:][targets[:, :-1] != IGNORE], targets[:, :-1][targets[:, :-1] != IGNORE])


def test_splits_are_seeded_disjoint_and_max_train_subsets() -> None:
    items = [f"C{'C' * i}O" for i in range(100)]
    first = split_corpus({"train": items}, val_size=10, test_size=0.2, max_train=30, seed=0)
    again = split_corpus({"train": items}, val_size=10, test_size=0.2, max_train=30, seed=0)
    other = split_corpus({"train": items}, val_size=10, test_size=0.2, max_train=30, seed=1)
    assert first == again and first["val"] != other["val"]
    assert [len(first[s]) for s in ("train", "val", "test")] == [30, 10, 20]
    assert not set(first["train"]) & set(first["val"]) and not set(first["val"]) & set(first["test"])
    given = split_corpus({"train": items, "test": ["CO"]}, val_size=0.5, test_size=0.2, max_train=None, seed=0)
    assert given["test"] == ["CO"] and len(given["train"]) == len(given["val"]) == 50
    with pytest.raises(DataError, match="too few to split off 100 for validation"):
        split_corpus({"train": items}, val_size=100, test_size=0.1, max_train=None, seed=0)


def test_moses_metrics_on_sets_with_known_answers() -> None:
    ethanol, benzene, charged = "CCO", "c1ccccc1", "C[NH3+]"
    generated = chemistry.Generated([ethanol, "OCC", "C1CC", "", benzene, charged, "C1CCCCCCC1"])
    assert chemistry.validity(generated) == pytest.approx(5 / 7)  # an unclosed ring and an empty string
    assert chemistry.unique_at(generated, 1000) == pytest.approx(4 / 5)  # OCC is ethanol written another way
    assert chemistry.unique_at(generated, 2) == pytest.approx(1 / 2)
    assert chemistry.novelty(generated, set(smiles_module.canonical([ethanol]))) == pytest.approx(3 / 4)
    # ethanol (twice) and benzene pass; the charged amine and the 8-membered ring do not.
    assert chemistry.filters(generated) == pytest.approx(3 / 5)
    assert not chemistry.passes_filters(smiles_module.parse("O=C1C(=Cc2ccccc2)SC(=S)N1")), "a PAINS alert (ene_rhod)"
    assert chemistry.internal_diversity(chemistry.Generated([benzene] * 5)) == 0.0
    two = chemistry.internal_diversity(chemistry.Generated([benzene, ethanol]))
    assert two == pytest.approx(0.5), "two molecules sharing no fingerprint bit: pairs (1, 0, 0, 1)"


def test_all_invalid_samples_give_finite_metrics_and_a_zero_score() -> None:
    from genlab.callbacks.molecule_metrics import valid_fcd_score

    values = chemistry.molecule_metrics(chemistry.Generated(["C1CC", "((", ""]), {"CCO"}, (1000, 10_000))
    assert values == {
        "validity": 0.0,
        "unique@1k": 0.0,
        "unique@10k": 0.0,
        "novelty": 0.0,
        "intdiv": 0.0,
        "filters": 0.0,
    }
    assert valid_fcd_score(0.0, math.nan) == 0.0 and valid_fcd_score(1.0, 0.0) == 1.0


def moses_test_molecules(count: int) -> list[str]:
    with gzip.open(require_data("moses/test.csv.gz") / "moses" / "test.csv.gz", "rt") as lines:
        return [next(lines).strip() for _ in range(count + 1)][1:]


@requires_data("moses/test.csv.gz")
def test_fcd_of_a_set_with_itself_is_zero_and_with_shuffled_characters_large(tmp_path) -> None:
    molecules = moses_test_molecules(500)
    ours, others = molecules[:250], molecules[250:]
    shuffled = ["".join(random.Random(i).sample(s, len(s))) for i, s in enumerate(smiles_module.canonical(ours))]
    chemnet = ChemNet()
    reference = chemnet.reference_statistics(ours, tmp_path)
    assert len(list((tmp_path / "molecules").glob("chemnet-*.npz"))) == 1, "cached in the cache folder"
    assert frechet_distance(chemnet.reference_statistics(ours, tmp_path), reference) == pytest.approx(0, abs=1e-3)
    # FCD is biased upwards at 250 molecules (a 512-d covariance): compare with two real sets of the same size.
    real = frechet_distance(chemnet.statistics(smiles_module.canonical(others)), reference)
    assert frechet_distance(chemnet.statistics(shuffled), reference) > 2 * real > 0


#: MOSES, a tiny GPT, a few steps: through genlab-train and genlab-sample in seconds.
TINY_MOSES = [
    "experiment=gpt_moses_cpu",
    "data.max_train=400",
    "data.val_size=64",
    "data.batch_size=32",
    "model.net.n_layer=1",
    "model.net.n_head=2",
    "model.net.n_embd=16",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_test_batches=1",
    "metrics.num_molecules=48",
    "metrics.num_val_molecules=24",
    "metrics.num_reference=64",
    "metrics.drawn=8",
    "model.sample_sequences=4",
    *QUIET_TRAIN,
]


@requires_data("moses/train.csv.gz", "moses/test.csv.gz")
def test_gpt_moses_cpu_trains_and_samples_molecules(genlab_train, tmp_path) -> None:
    # MOSES' own training file; 300 of its test molecules (tokenizing all 176,074 would take most of the test's time)
    (tmp_path / "test.smi").write_text("\n".join(moses_test_molecules(300)))
    run = genlab_train(*TINY_MOSES, f"data.test_path={tmp_path / 'test.smi'}").check()
    metrics = run.metrics
    assert metrics["judged_metric"] == "val/valid_fcd_score" and metrics["judged_mode"] == "max"
    for name in ("validity", "unique@1k", "unique@10k", "novelty", "intdiv", "filters", "valid_fcd_score"):
        assert 0.0 <= metrics[f"test/{name}"] <= 1.0, name
    assert metrics["test/fcd"] is None or metrics["test/fcd"] > 0
    assert metrics["molecule_metrics"]["num_generated_test"] == 48
    # Novelty as MOSES defines it: against the whole training file, not the max_train subset the run trained on.
    assert metrics["molecule_metrics"]["num_training_split"] == 1_584_663
    assert metrics["molecule_metrics"]["num_trained_on"] <= 400
    assert metrics["test/novelty"] <= metrics["test/unseen_in_training"] <= 1.0
    assert len((run.dir / "samples" / "sequences.txt").read_text().splitlines()) == 4
    (events,) = {path.parent for path in (run.dir / "tensorboard").rglob("events.out.tfevents.*")}
    logged = EventAccumulator(str(events)).Reload().Tags()
    assert {"val/molecules", "test/molecules"} <= set(logged["images"]), "the drawn grids go to TensorBoard"
    assert {"val/validity", "val/valid_fcd_score", "test/fcd"} <= set(logged["scalars"])

    sample = call_entrypoint("genlab-sample", [f"run={run.dir}", "n=20"], cwd=tmp_path, env=train_env(tmp_path))
    assert sample.returncode == 0, sample.stderr
    lines = (run.dir / "generated" / "molecules.smi").read_text().splitlines()
    assert len(lines) == 20
    picture = (run.dir / "generated" / "molecules.png").read_bytes()
    assert picture.startswith(b"\x89PNG")


def test_molecule_runs_are_judged_by_a_chemistry_metric_and_text_runs_by_their_loss(compose_config) -> None:
    assert judged_by(compose_config("experiment=gpt_moses")) == ("val/valid_fcd_score", "max")
    assert judged_by(compose_config("data=moses", "model=transformer", "metrics=none")) == ("val/loss", "min")
    text = compose_config("data=python_source", "model=transformer")
    assert judged_by(text) == ("val/loss", "min")
    assert text.callbacks.model_checkpoint.monitor == "val/loss"
    molecules = compose_config("data=smiles", "data.path=x.smi", "model=transformer")
    assert (molecules.callbacks.model_checkpoint.monitor, molecules.callbacks.model_checkpoint.mode) == (
        "val/valid_fcd_score",
        "max",
    )


def test_smiles_files_csv_or_one_per_line(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("id,smiles\n1,CCO\n2,c1ccccc1\n")
    (tmp_path / "b.smi").write_text("SMILES\nCCO ethanol\n\nc1ccccc1\n")
    with gzip.open(tmp_path / "c.csv.gz", "wt") as file:
        file.write("SMILES\nCCO\n")
    assert read_smiles(tmp_path / "a.csv") == read_smiles(tmp_path / "b.smi") == ["CCO", "c1ccccc1"]
    assert read_smiles(tmp_path / "c.csv.gz") == ["CCO"]


@pytest.mark.parametrize(
    ("representation", "symbols"),
    [
        ("selfies", lambda s: s.startswith("[")),
        ("kekule", lambda s: s not in {"c", "n", "o", "s", "p"} and not s.startswith("[n")),
    ],
)
def test_other_representations_train_on_their_text_and_keep_the_smiles(tmp_path, representation, symbols) -> None:
    (tmp_path / "m.smi").write_text("\n".join(["CCO", "c1ccccc1", "CC(=O)O", "c1cc[nH]c1", "C1CC"] * 4))
    data = MoleculeDataModule(
        path=str(tmp_path / "m.smi"), representation=representation, cache_dir=str(tmp_path), val_size=4, test_size=4
    )
    spec = data.spec
    assert spec.tokenizer.kind == representation
    assert all(symbols(s) for s in spec.tokenizer.symbols[3:]), spec.tokenizer.symbols  # SELFIES; no aromatic atoms
    assert "C1CC" not in data.items["train"], "an invalid SMILES cannot be written so: left out"
    assert isinstance(tokenizer_from_state(spec.tokenizer.state()), type(spec.tokenizer))
    for index in range(len(data.items["train"])):
        _, targets = data.datasets["train"].__getitems__([index])
        smiles = spec.tokenizer.to_smiles(spec.tokenizer.decode(targets[0].tolist()))
        assert smiles_module.canonical([smiles]) == smiles_module.canonical([data.items["train"][index]])


MOLECULE_BAD_INPUTS = {
    "no SMILES column": ("a.csv", "id,formula\n1,C2H6O\n", "has no 'SMILES' column (its columns: id, formula)"),
    "empty file": ("b.csv", "", "is empty"),
    "no molecules": ("c.smi", "\n\n", "holds no molecules"),
    "missing file": (None, None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(MOLECULE_BAD_INPUTS))
def test_bad_molecule_files_are_one_line(genlab_train, tmp_path, case: str) -> None:
    name, content, message = MOLECULE_BAD_INPUTS[case]
    path = tmp_path / (name or "absent.csv")
    if content is not None:
        path.write_text(content)
    run = genlab_train("data=smiles", f"data.path={path}", "model=transformer")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("genlab-train: error:")]
    assert message in line


@requires_data("moses/train.csv.gz")
def test_missing_chem_extra_and_molecule_metrics_on_text_are_one_line(genlab_train, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "rdkit", None)  # as if RDKit were not installed
        run = genlab_train("data=moses", "model=transformer")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert 'pip install "genlab[chem]"' in run.stderr
    run = genlab_train("data=python_source", "data.max_chars=20000", "model=transformer", "metrics=molecules")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "metrics=molecules scores generated molecules, but the data is not molecules" in run.stderr
