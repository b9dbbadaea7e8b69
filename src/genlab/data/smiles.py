"""Molecules as text: SMILES split into its symbols (as written, or in Kekulé form), or SELFIES (every string
decodes to a valid molecule).

A molecule tokenizer also turns its text back into SMILES (`to_smiles`), so a run's samples can be scored and drawn
whatever representation it was trained on; it is saved in checkpoints like the other tokenizers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from genlab.data.tokenizers import SymbolTokenizer
from genlab.errors import DataError
from genlab.extras import import_extra

# One SMILES symbol: a bracket atom ([nH], [C@@H], [O-], [13CH3]), a two-letter organic-subset atom (Br, Cl),
# a two-digit ring bond (%12, or %(123)), or else one character (an atom, bond, branch, ring digit, dot).
SMILES_SYMBOL = re.compile(r"\[[^\[\]]*\]|Br|Cl|%\(\d+\)|%\d\d|.", re.DOTALL)
# One SELFIES symbol: everything is bracketed ([C], [=O], [Branch1], [Ring2]), fragments are joined by dots.
SELFIES_SYMBOL = re.compile(r"\[[^\[\]]*\]|.", re.DOTALL)


def _selfies(needed_for: str):
    return import_extra("selfies", "chem", needed_for)


class SmilesTokenizer(SymbolTokenizer):
    """SMILES symbols: `Cl`, `Br`, bracket atoms and `%nn` ring bonds are one symbol each."""

    kind = "smiles"

    @staticmethod
    def split(text: str) -> list[str]:
        return SMILES_SYMBOL.findall(text)

    @staticmethod
    def from_smiles(smiles: str) -> str:
        return smiles

    @staticmethod
    def to_smiles(text: str) -> str:
        return text


class KekuleTokenizer(SmilesTokenizer):
    """SMILES in Kekulé form: aromatic rings written with explicit alternating single and double bonds (`C1=CC=CC=C1`
    for `c1ccccc1`), RDKit's canonical order. An aromatic ring a model writes in lower case must also be one RDKit
    can kekulize (the right ring size, `[nH]` where needed), which is the most common way a SMILES model's samples
    fail; in Kekulé form every ring is plain bonds and atoms, and RDKit finds the aromaticity when it reads them."""

    kind = "kekule"

    @staticmethod
    def from_smiles(smiles: str) -> str:
        """The canonical Kekulé SMILES of a SMILES; a DataError when RDKit cannot read or kekulize it."""
        chem = rdkit_chem()
        molecule = parse(smiles)
        if molecule is None:
            raise DataError(f"cannot read {smiles!r} as a molecule")
        try:
            chem.Kekulize(molecule, clearAromaticFlags=True)
        except ValueError as exc:
            raise DataError(f"cannot write {smiles!r} in Kekulé form: {exc}") from None
        return chem.MolToSmiles(molecule, kekuleSmiles=True)


class SelfiesTokenizer(SymbolTokenizer):
    """SELFIES symbols (Krenn et al. 2020), converted from and to SMILES with the `selfies` package."""

    kind = "selfies"

    @staticmethod
    def split(text: str) -> list[str]:
        return SELFIES_SYMBOL.findall(text)

    @staticmethod
    def from_smiles(smiles: str) -> str:
        """The SELFIES of a SMILES; a DataError when `selfies` cannot read it."""
        selfies = _selfies("data.representation=selfies")
        try:
            return selfies.encoder(smiles)
        except selfies.EncoderError as exc:
            raise DataError(f"cannot write {smiles!r} as SELFIES: {exc}") from None

    @staticmethod
    def to_smiles(text: str) -> str:
        """The SMILES a generated SELFIES decodes to ('' for one that does not decode)."""
        selfies = _selfies("sampling a SELFIES model")
        try:
            return selfies.decoder(text) or ""
        except selfies.DecoderError:
            return ""


def molecule_tokenizer(representation: str) -> type[SmilesTokenizer | SelfiesTokenizer]:
    return {"selfies": SelfiesTokenizer, "kekule": KekuleTokenizer}.get(representation, SmilesTokenizer)


# -- RDKit: molecules of SMILES (the `chem` extra) ---------------------------------------------------------------


def rdkit_chem() -> Any:
    """`rdkit.Chem` with RDKit's parse warnings silenced (generated SMILES are often invalid: that is measured)."""
    chem = import_extra("rdkit.Chem", "chem", "molecule metrics")
    import_extra("rdkit.RDLogger", "chem", "molecule metrics").DisableLog("rdApp.*")
    return chem


def parse(smiles: str) -> Any | None:
    """The RDKit molecule of a SMILES, or None when it is empty or invalid (MOSES' `get_mol`)."""
    if not smiles:
        return None
    chem = rdkit_chem()
    molecule = chem.MolFromSmiles(smiles)
    if molecule is None:
        return None
    try:
        chem.SanitizeMol(molecule)
    except ValueError:
        return None
    return molecule


def canonical(smiles: Iterable[str]) -> list[str | None]:
    """RDKit's canonical SMILES of each molecule (None for an invalid one)."""
    chem = rdkit_chem()
    return [None if (molecule := parse(s)) is None else chem.MolToSmiles(molecule) for s in smiles]
