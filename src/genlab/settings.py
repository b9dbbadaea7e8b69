"""Types for the settings of genlab's classes: their constructors' type hints are the config's schema.

Every config node with a `_target_` is checked against the signature of what it builds before anything is built
(`genlab.validation`): the type of each value and the ranges written here with `typing.Annotated`, so a bad value
is one line naming the key, the value and what is allowed. Use these in constructor signatures, and `Literal[...]`
for a fixed set of choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from annotated_types import Ge, Gt, Le, Lt, MinLen

PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
#: A probability or a fraction, 0 and 1 included.
Probability = Annotated[float, Ge(0), Le(1)]
#: A fraction strictly below 1 (e.g. a decay rate, a dropout), 0 included.
UnitFraction = Annotated[float, Ge(0), Lt(1)]
#: Layer sizes: a non-empty list of positive integers.
Sizes = Annotated[Sequence[PositiveInt], MinLen(1)]
#: A count of examples (an integer > 0) or a fraction of them (a number strictly between 0 and 1).
CountOrFraction = PositiveInt | Annotated[float, Gt(0), Lt(1)]
#: A classifier-free guidance scale w (`genlab.models.guidance`): 0 the conditional model, > 0 guided, -1 the
#: unconditional model the net learned from the dropped labels.
GuidanceScale = Annotated[float, Ge(-1)]
