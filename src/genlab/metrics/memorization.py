"""Does a model copy its training data? Pure functions over features (images) and token ids (text, music).

Images, for each generated sample in one space (pixels, or the FID feature net's features):
- `closer_to_train`: the share of samples whose nearest training image is nearer than their nearest held-out
  image, with as many training as held-out images. A model that generalizes scores about 0.5 (the two sets are
  draws of one distribution); one that copies training images scores near 1.
- `near_copy_share`: the share of samples whose distance to the nearest training image is below `threshold` times
  the mean distance to their `k` nearest training images (after Carlini et al. 2023, "Extracting Training Data from
  Diffusion Models", sec. 4: a near-copy is much closer to one training image than to the others).
- `data_copying_ct`: Meehan et al. 2020's C_T ("A Non-Parametric Test to Detect Data-Copying in Generative
  Models"): the space is cut into cells (k-means on the training set); in each cell a Mann-Whitney U test compares
  the held-out samples' distances to the training set with the generated samples'; C_T is the z-score averaged over
  the cells, weighted by their share of held-out samples. C_T << 0: data-copying (generated samples are closer to
  the training set than unseen data is); C_T >> 0: underfitting; about 0: neither. Cells with fewer than
  `MIN_PER_CELL` held-out or generated samples are left out, as the paper leaves out cells below its threshold tau.

Text and music: a hashed index of every n-gram of the training tokens; the share of generated n-grams found in it,
and the longest run of consecutive found n-grams, in tokens (an upper bound on the longest verbatim span: two
found n-grams that overlap may come from different places of the training data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: Cells of C_T with fewer held-out or generated samples than this are left out (no z-score from so few).
MIN_PER_CELL = 5
#: The odd multiplier of the n-gram hash (64-bit wrap-around arithmetic).
HASH_BASE = 1_000_003


def nearest(queries: torch.Tensor, references: torch.Tensor, k: int = 1, chunk: int = 512) -> torch.Tensor:
    """(n, k) Euclidean distances of each query (row) to its k nearest references, ascending."""
    queries, references = queries.flatten(1).double(), references.flatten(1).double()
    k = min(k, len(references))
    parts = [torch.cdist(part, references).topk(k, largest=False).values for part in queries.split(chunk)]
    return torch.cat(parts)


def closer_to_train(to_train: torch.Tensor, to_heldout: torch.Tensor) -> float:
    """The share of samples nearer to a training than to a held-out point (distances to the nearest of each)."""
    return float((to_train < to_heldout).double().mean())


def copy_ratios(knn_train: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest training point over the mean distance to the k nearest (0: an exact copy)."""
    return knn_train[:, 0] / knn_train.mean(1).clamp_min(1e-12)


def near_copy_share(knn_train: torch.Tensor, threshold: float) -> float:
    """The share of samples whose `copy_ratios` is below `threshold`."""
    return float((copy_ratios(knn_train) < threshold).double().mean())


def mann_whitney_z(x: torch.Tensor, y: torch.Tensor) -> float:
    """The z-score of the Mann-Whitney U statistic U = #{(i, j): x_i > y_j} (ties count 1/2) under the null that x
    and y come from one distribution (normal approximation); negative when x tends to be smaller than y."""
    m, n = len(x), len(y)
    greater = (x[:, None] > y[None, :]).double().sum() + 0.5 * (x[:, None] == y[None, :]).double().sum()
    return float((greater - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iterations: int = 20) -> torch.Tensor:
    """(k, d) centres of Lloyd's k-means from k seeded random points."""
    points = points.flatten(1).double()
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assigned = torch.cdist(points, centres).argmin(1)
        for cell in range(len(centres)):
            members = points[assigned == cell]
            if len(members):
                centres[cell] = members.mean(0)
    return centres


def data_copying_ct(
    train: torch.Tensor, heldout: torch.Tensor, generated: torch.Tensor, cells: int = 5, seed: int = 0
) -> float:
    """Meehan et al. 2020's C_T of `generated` against `train`, with `heldout` as the unseen sample (see the module
    docstring); NaN when no cell holds enough of both."""
    centres = kmeans(train, min(cells, len(train)), seed)
    to_train_heldout = nearest(heldout, train)[:, 0]
    to_train_generated = nearest(generated, train)[:, 0]
    cell_heldout = torch.cdist(heldout.flatten(1).double(), centres).argmin(1)
    cell_generated = torch.cdist(generated.flatten(1).double(), centres).argmin(1)
    total, weight = 0.0, 0.0
    for cell in range(len(centres)):
        x, y = to_train_generated[cell_generated == cell], to_train_heldout[cell_heldout == cell]
        if len(x) < MIN_PER_CELL or len(y) < MIN_PER_CELL:
            continue
        share = len(y) / len(heldout)
        total += share * mann_whitney_z(x, y)
        weight += share
    return total / weight if weight else math.nan


def image_memorization(
    generated: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    threshold: float,
    k: int = 50,
    cells: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """The three image statistics of the module docstring in one space; `train` and `heldout` of equal size."""
    knn_train = nearest(generated, train, k)
    to_heldout = nearest(generated, heldout)[:, 0]
    return {
        "closer_to_train": closer_to_train(knn_train[:, 0], to_heldout),
        "near_copy_share": near_copy_share(knn_train, threshold),
        "data_copying_ct": data_copying_ct(train, heldout, generated, cells, seed),
    }


def ngram_hashes(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """The 64-bit hash of every window of `n` consecutive tokens of a 1-D tensor (none when shorter than n)."""
    tokens = tokens.long()
    if len(tokens) < n:
        return torch.empty(0, dtype=torch.long)
    windows = tokens.unfold(0, n, 1)
    powers = torch.full((n,), HASH_BASE, dtype=torch.long).cumprod(0)  # wraps around: a hash, not a number
    return (windows * powers).sum(1)


def padded_ngram_hashes(rows: torch.Tensor, lengths: torch.Tensor, n: int, chunk: int = 8192) -> torch.Tensor:
    """The hashes of every n-gram inside the first `lengths[i]` tokens of each row of a padded (N, L) tensor, a
    chunk of rows at a time (a million molecules are not looped over one by one)."""
    if rows.shape[1] < n:
        return torch.empty(0, dtype=torch.long)
    powers = torch.full((n,), HASH_BASE, dtype=torch.long).cumprod(0)
    parts = []
    for start in range(0, len(rows), chunk):
        windows = rows[start : start + chunk].long().unfold(1, n, 1)  # (rows, positions, n)
        inside = torch.arange(windows.shape[1]) + n <= lengths[start : start + chunk, None]
        parts.append((windows * powers).sum(2)[inside])
    return torch.cat(parts)


class NgramIndex:
    """The sorted set of n-gram hashes of the training tokens: membership by binary search, built once."""

    def __init__(self, hashes: torch.Tensor, n: int) -> None:
        self.n = n
        self.hashes = torch.unique(hashes)

    @classmethod
    def of_sequences(cls, sequences: Sequence[torch.Tensor], n: int) -> NgramIndex:
        """The index of a few long sequences (a running text)."""
        hashes = [ngram_hashes(sequence, n) for sequence in sequences]
        return cls(torch.cat(hashes) if hashes else torch.empty(0, dtype=torch.long), n)

    def __len__(self) -> int:
        return len(self.hashes)

    def found(self, tokens: torch.Tensor) -> torch.Tensor:
        """For each n-gram of `tokens`, whether the training data holds it."""
        hashes = ngram_hashes(tokens, self.n)
        if not len(hashes) or not len(self.hashes):
            return torch.zeros(len(hashes), dtype=torch.bool)
        at = torch.searchsorted(self.hashes, hashes).clamp_max(len(self.hashes) - 1)
        return self.hashes[at] == hashes


def longest_run(flags: torch.Tensor) -> int:
    """The length of the longest run of True."""
    best = run = 0
    for flag in flags.tolist():
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def text_copying(index: NgramIndex, generated: Sequence[torch.Tensor]) -> dict[str, float]:
    """`ngram_copy_share`: the share of generated n-grams found in the training data (samples shorter than n count
    none); `longest_copied_span`: the longest run of found n-grams in any sample, in tokens (0 when none)."""
    found = [index.found(tokens) for tokens in generated]
    total = sum(len(flags) for flags in found)
    runs = [longest_run(flags) for flags in found]
    longest = max(runs, default=0)
    return {
        "ngram_copy_share": sum(int(flags.sum()) for flags in found) / total if total else 0.0,
        "longest_copied_span": float(longest + index.n - 1 if longest else 0),
    }


def training_share(generated: Sequence[str], training: set[str]) -> float:
    """The share of generated items (duplicates counted) that are training items, e.g. canonical SMILES."""
    return sum(item in training for item in generated) / len(generated) if generated else 0.0
