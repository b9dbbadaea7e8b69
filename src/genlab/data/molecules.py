"""Molecules as whole SMILES (or SELFIES) sequences: MOSES (`data=moses`) or any file of SMILES (`data=smiles`).

A `.csv` file (gzipped or not) is read by its header, from the `column` column; any other file holds one SMILES a
line (the first field of the line, as in `.smi` files). Needs the `[chem]` extra: RDKit scores and draws the
molecules a model generates.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from genlab.data.molecule_drawing import draw_molecules
from genlab.data.sequences import SequenceDataModule
from genlab.data.smiles import molecule_tokenizer
from genlab.data.tokenizers import SymbolTokenizer
from genlab.errors import DataError
from genlab.extras import import_extra
from genlab.files import write_text_atomically

#: At most this many molecules are drawn in genlab-sample's picture.
DRAWN = 100


def _open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _read_column(lines: io.TextIOBase, column: str, path: Path) -> list[str]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path} is empty; give a CSV file with a header and a {column!r} column")
    names = [name.strip().lower() for name in header]
    if column.lower() not in names:
        raise DataError(
            f"{path} has no {column!r} column (its columns: {', '.join(header)}); "
            f"name the column of SMILES with data.column=..."
        )
    index = names.index(column.lower())
    return [row[index].strip() for row in reader if len(row) > index and row[index].strip()]


def read_smiles(path: Path, column: str = "SMILES") -> list[str]:
    """The SMILES of a CSV file (from `column`) or of a text file (the first field of each line; a first line
    that is just the column's name is a header)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; point data.path at a CSV or text file of SMILES")
    try:
        with _open_text(path) as lines:
            if ".csv" in path.suffixes:
                molecules = _read_column(lines, column, path)
            else:
                molecules = [fields[0] for line in lines if (fields := line.split())]
                if molecules and molecules[0].lower() == column.lower():
                    molecules = molecules[1:]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not molecules:
        raise DataError(f"{path} holds no molecules; give a file with one SMILES per line or row")
    return molecules


class MoleculeDataModule(SequenceDataModule):
    """One sequence per molecule, from `path`; validation (and test, without `test_path`) drawn from it with
    `split_seed`. `representation=kekule` trains on Kekulé SMILES, `representation=selfies` on SELFIES (molecules
    that cannot be written so are left out).

    `items` holds each split's molecules as SMILES: what the chemistry metrics compare samples with.
    """

    name = "molecules"

    def __init__(
        self,
        path: str,
        test_path: str | None = None,
        column: str = "SMILES",
        representation: Literal["smiles", "kekule", "selfies"] = "smiles",
        **kwargs,
    ) -> None:
        import_extra("rdkit", "chem", "molecule data")
        if representation == "selfies":
            import_extra("selfies", "chem", "data.representation=selfies")
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        self.test_path = Path(test_path).expanduser() if test_path else None
        self.column = column
        self.representation = representation

    @property
    def tokenizer_class(self) -> type[SymbolTokenizer]:
        return molecule_tokenizer(self.representation)

    def read_corpus(self) -> dict[str, list[str]]:
        corpus = {"train": read_smiles(self.path, self.column)}
        if self.test_path is not None:
            corpus["test"] = read_smiles(self.test_path, self.column)
        return corpus

    def text_of(self, item: str) -> str | None:
        try:
            return self.tokenizer_class.from_smiles(item)
        except DataError:
            return None

    @classmethod
    def write_samples(cls, texts: Sequence[str], tokenizer: SymbolTokenizer, out: Path) -> list[Path]:
        """`molecules.smi` (every generated molecule as SMILES, one a line, invalid ones too) and `molecules.png`
        (the first DRAWN drawn by RDKit, valid ones first)."""
        smiles = [tokenizer.to_smiles(text) for text in texts]
        listing = out / "molecules.smi"
        write_text_atomically(listing, "".join(f"{s}\n" for s in smiles))
        picture = out / "molecules.png"
        draw_molecules(smiles[:DRAWN]).save(picture)
        return [listing, picture]
