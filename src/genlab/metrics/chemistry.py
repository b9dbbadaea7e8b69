"""MOSES' metrics of generated molecules (Polykovskiy et al. 2020), computed with RDKit as MOSES defines them.

Every metric but validity is computed on the valid molecules, duplicates included, as MOSES does. With no valid
molecule each of them is 0 (nothing unique, novel or diverse), never a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch

from genlab.data.smiles import parse, rdkit_chem
from genlab.extras import import_extra

#: MOSES' filters keep molecules made of these atoms only.
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
#: MOSES' filters drop molecules with a ring of this many atoms or more.
MAX_RING_SIZE = 8


@dataclass
class Generated:
    """Generated SMILES, parsed once: the valid molecules and their canonical SMILES, in the generated order."""

    smiles: list[str]
    molecules: list[Any] = field(init=False)
    canonical: list[str] = field(init=False)

    def __post_init__(self) -> None:
        chem = rdkit_chem()
        self.molecules = [m for m in map(parse, self.smiles) if m is not None]
        self.canonical = [chem.MolToSmiles(m) for m in self.molecules]


def validity(generated: Generated) -> float:
    """The fraction of generated SMILES that RDKit reads and sanitizes."""
    return len(generated.molecules) / len(generated.smiles) if generated.smiles else 0.0


def unique_at(generated: Generated, k: int) -> float:
    """unique@k: distinct canonical SMILES among the first k valid molecules, over their number."""
    first = generated.canonical[:k]
    return len(set(first)) / len(first) if first else 0.0


def novelty(generated: Generated, training: set[str]) -> float:
    """The fraction of distinct valid molecules that are not in the training set (canonical SMILES)."""
    distinct = set(generated.canonical)
    return len(distinct - training) / len(distinct) if distinct else 0.0


@cache
def _morgan_generator() -> Any:
    generators = import_extra("rdkit.Chem.rdFingerprintGenerator", "chem", "molecule metrics")
    return generators.GetMorganGenerator(radius=2, fpSize=1024)


def internal_diversity(generated: Generated, device: str | torch.device = "cpu", chunk: int = 1024) -> float:
    """IntDiv1: 1 - the mean Tanimoto similarity over all pairs of valid molecules (each with itself included), on
    Morgan fingerprints of radius 2 and 1024 bits; 0 when every molecule is the same.

    The similarities are matrix products of the fingerprint bits (on `device`, `chunk` rows at a time), as MOSES
    computes them: seconds for 10,000 molecules on a CPU, where pair-by-pair similarity takes half a minute.
    """
    if not generated.molecules:
        return 0.0
    bits = np.stack([_morgan_generator().GetFingerprintAsNumPy(m) for m in generated.molecules])
    fingerprints = torch.from_numpy(bits).to(device=device, dtype=torch.float32)
    counts = fingerprints.sum(1)
    total = 0.0
    for start in range(0, len(fingerprints), chunk):
        rows = fingerprints[start : start + chunk]
        shared = rows @ fingerprints.T
        union = counts[start : start + chunk, None] + counts[None, :] - shared
        total += torch.where(union > 0, shared / union, 1.0).double().sum().item()  # two empty fingerprints: equal
    return 1.0 - total / len(fingerprints) ** 2


@cache
def _pains_catalog() -> Any:
    filters = import_extra("rdkit.Chem.FilterCatalog", "chem", "molecule metrics")
    params = filters.FilterCatalogParams()
    params.AddCatalog(filters.FilterCatalogParams.FilterCatalogs.PAINS)
    return filters.FilterCatalog(params)


def passes_filters(molecule: Any) -> bool:
    """MOSES' filters as far as RDKit carries them: no ring of 8 or more atoms, no charged atom, only C N S O F Cl
    Br H, and no PAINS alert (RDKit's PAINS catalogue, matched as RDKit documents it, without explicit hydrogens).
    MOSES' own list of medicinal-chemistry SMARTS is not included, so this is an upper bound of MOSES' `Filters`
    (every molecule of MOSES' test set passes both)."""
    if any(len(ring) >= MAX_RING_SIZE for ring in molecule.GetRingInfo().AtomRings()):
        return False
    atoms = molecule.GetAtoms()
    if any(atom.GetFormalCharge() != 0 or atom.GetSymbol() not in ALLOWED_ATOMS for atom in atoms):
        return False
    return not _pains_catalog().HasMatch(molecule)


def filters(generated: Generated) -> float:
    """The fraction of valid molecules that pass `passes_filters`."""
    if not generated.molecules:
        return 0.0
    return sum(map(passes_filters, generated.molecules)) / len(generated.molecules)


def molecule_metrics(
    generated: Generated, training: set[str], unique_ks: Sequence[int], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """validity, unique@k for each k, novelty, intdiv and filters of one set of generated molecules."""
    values = {"validity": validity(generated)}
    for k in unique_ks:
        values[f"unique@{k // 1000}k" if k % 1000 == 0 else f"unique@{k}"] = unique_at(generated, k)
    values["novelty"] = novelty(generated, training)
    values["intdiv"] = internal_diversity(generated, device)
    values["filters"] = filters(generated)
    return values
