"""Pictures of molecules drawn by RDKit: a grid, valid molecules first, for genlab-sample and the loggers."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch

from genlab.data.smiles import parse, rdkit_chem
from genlab.extras import import_extra


def draw_molecules(smiles: Sequence[str], per_row: int = 10, size: int = 200) -> Any:
    """A PIL image of the molecules in a grid of `per_row` columns, `size` pixels a cell: the valid ones in their
    order, then the invalid ones as far as RDKit can read them unsanitized, labelled `invalid`.

    Drawn with RDKit's Cairo drawer directly: `Draw.MolsToGridImage` caps a grid at 50 molecules and fails when
    given another cap (RDKit 2026.09).
    """
    from PIL import Image

    chem = rdkit_chem()
    drawing = import_extra("rdkit.Chem.Draw.rdMolDraw2D", "chem", "drawing molecules")
    valid, invalid = [], []
    for s in smiles:
        molecule = parse(s)
        if molecule is not None:
            valid.append(molecule)
        else:  # an empty molecule would leave the cell blank, without its label
            invalid.append(chem.MolFromSmiles(s, sanitize=False) or chem.MolFromSmiles("*"))
    molecules = valid + invalid or [chem.Mol()]
    columns = min(per_row, len(molecules))
    rows = -(-len(molecules) // columns)
    drawer = drawing.MolDraw2DCairo(columns * size, rows * size, size, size)
    drawer.DrawMolecules(molecules, legends=[""] * len(valid) + ["invalid"] * len(invalid) or [""])
    drawer.FinishDrawing()
    return Image.open(io.BytesIO(drawer.GetDrawingText()))


def molecule_grid(smiles: Sequence[str], per_row: int = 8) -> torch.Tensor:
    """The same picture as a (3, H, W) float tensor in [0, 1], for `genlab.callbacks.media.log_image`."""
    from torchvision.transforms.functional import pil_to_tensor

    image = draw_molecules(smiles, per_row=per_row).convert("RGB")
    return pil_to_tensor(image).float() / 255
