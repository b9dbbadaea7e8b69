"""Memorization metrics: a "model" that returns training examples scores as copying, one that returns held-out
examples of the same distribution does not; text through the real entrypoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, TINY_LM_NET

from genlab.metrics.memorization import (
    NgramIndex,
    image_memorization,
    mann_whitney_z,
    ngram_hashes,
    padded_ngram_hashes,
    text_copying,
    training_share,
)


@pytest.fixture(scope="module")
def draws() -> dict[str, torch.Tensor]:
    """Three disjoint draws of one distribution (a mixture of 4 Gaussians in 8 dimensions): train, held-out, and
    more unseen points for the model that generalizes."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=generator) * 4

    def draw(n: int) -> torch.Tensor:
        return centres[torch.randint(0, 4, (n,), generator=generator)] + torch.randn(n, 8, generator=generator)

    return {"train": draw(300), "heldout": draw(300), "unseen": draw(200)}


def test_a_model_returning_training_examples_scores_as_copying(draws) -> None:
    scores = image_memorization(draws["train"][:200], draws["train"], draws["heldout"], threshold=1 / 3)
    assert scores["closer_to_train"] == 1.0
    assert scores["near_copy_share"] == 1.0
    assert scores["data_copying_ct"] < -5  # Meehan et al.: C_T << 0 is data-copying


def test_a_model_returning_unseen_examples_does_not(draws) -> None:
    scores = image_memorization(draws["unseen"], draws["train"], draws["heldout"], threshold=1 / 3)
    assert 0.35 < scores["closer_to_train"] < 0.65
    assert scores["near_copy_share"] < 0.05
    assert abs(scores["data_copying_ct"]) < 3


def test_near_noisy_copies_count_and_the_threshold_decides(draws) -> None:
    noisy = draws["train"][:100] + 0.01 * torch.randn(100, 8, generator=torch.Generator().manual_seed(1))
    assert image_memorization(noisy, draws["train"], draws["heldout"], threshold=1 / 3)["near_copy_share"] == 1.0
    assert image_memorization(noisy, draws["train"], draws["heldout"], threshold=1e-6)["near_copy_share"] == 0.0


def test_mann_whitney_z_sign_and_null() -> None:
    small, large = torch.arange(10.0), torch.arange(10.0) + 100
    assert mann_whitney_z(small, large) < -3 < 3 < mann_whitney_z(large, small)
    assert mann_whitney_z(small, small) == 0.0


def test_ngram_index_finds_copied_text_and_its_longest_span() -> None:
    generator = torch.Generator().manual_seed(0)
    training = torch.randint(0, 50, (2000,), generator=generator)
    index = NgramIndex.of_sequences([training], n=8)
    copied = text_copying(index, [training[100:164], training[700:740]])
    assert copied == {"ngram_copy_share": 1.0, "longest_copied_span": 64.0}
    fresh = text_copying(index, [torch.randint(50, 60, (64,), generator=generator)])
    assert fresh == {"ngram_copy_share": 0.0, "longest_copied_span": 0.0}
    spliced = torch.cat([torch.full((10,), 55), training[300:320], torch.full((10,), 56)])
    assert text_copying(index, [spliced])["longest_copied_span"] == 20.0


def test_padded_hashes_are_those_of_each_sequence() -> None:
    rows = torch.tensor([[1, 2, 3, 4, 5, 0, 0], [6, 7, 8, 0, 0, 0, 0], [9, 9, 9, 9, 9, 9, 9]])
    lengths = torch.tensor([5, 3, 7])
    expected = torch.cat([ngram_hashes(row[:length], 3) for row, length in zip(rows, lengths, strict=True)])
    assert torch.equal(padded_ngram_hashes(rows, lengths, 3, chunk=2), expected)


def test_training_share_counts_duplicates() -> None:
    assert training_share(["CCO", "CCO", "CCN", "c1ccccc1"], {"CCO", "c1ccccc1"}) == 0.75
    assert training_share([], {"CCO"}) == 0.0


def test_text_runs_report_copying_in_metrics_json(genlab_train, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    settings = [
        *QUIET_TRAIN,
        *TINY_LM_NET,
        "data=text_file",
        f"data.path={corpus}",
        "data.steps_per_epoch=20",
        "trainer.max_epochs=1",
        "metrics=none",
        "logger=csv",
        "callbacks.samples=null",
        "callbacks.memorization.ngram=8",
        "callbacks.memorization.text_samples=4",
    ]
    metrics = genlab_train(*settings).check().metrics
    assert 0 <= metrics["test/copy_ngram_share"] <= 1
    assert metrics["test/copy_longest_span"] == 0 or metrics["test/copy_longest_span"] >= 8
    assert metrics["memorization"]["ngram"] == 8 and metrics["memorization"]["num_generated"] == 4
