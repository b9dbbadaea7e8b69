"""Every configured model declares the contracts of genlab.models.contracts and keeps them: the methods its consumers
call exist with the contract's parameters, its options are declared in its signature, and a built model has the
attributes its contracts name."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import TINY_LM_NET
from omegaconf import open_dict

from genlab.config import config_dir
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import CharTokenizer
from genlab.models.base import GenerativeModel
from genlab.models.contracts import (
    CONTRACTS,
    SAMPLER_OPTIONS,
    ConditionalModel,
    ImageGenerator,
    IncrementalDecoder,
    LatentImageGenerator,
    SequenceGenerator,
    contracts_of,
)
from genlab.run.loading import build_model

MODELS = sorted(path.stem for path in (Path(config_dir()) / "model").glob("*.yaml"))

#: The attributes (not methods) each contract names, which a built model must have.
ATTRIBUTES = {
    ImageGenerator: ("spec", "device", "grids_use_real_images"),
    ConditionalModel: ("conditioning",),
    SequenceGenerator: ("tokenizer", "device", "sample_temperature", "whole_sequences"),
    IncrementalDecoder: ("tokenizer", "device"),
}


def contract_problems(cls: type) -> list[str]:
    """What `cls` misses of the contracts it declares: an abstract method left, or one whose parameters do not
    begin with the contract's (extra ones need defaults); an image generator's sample options beyond `labels`
    and the sampler options, or a `**` catch-all that hides which options it takes."""
    problems = [f"{cls.__name__}.{name} is not implemented" for name in sorted(getattr(cls, "__abstractmethods__", ()))]
    for contract in CONTRACTS:
        if not issubclass(cls, contract):
            continue
        for name, declared in vars(contract).items():
            if not getattr(declared, "__isabstractmethod__", False) or name in cls.__abstractmethods__:
                continue
            wanted = [p for p in inspect.signature(declared).parameters.values() if p.kind is not p.VAR_KEYWORD]
            given = list(inspect.signature(getattr(cls, name)).parameters.values())
            if [p.name for p in given[: len(wanted)]] != [p.name for p in wanted]:
                problems.append(f"{cls.__name__}.{name}{inspect.signature(getattr(cls, name))} != {contract.__name__}")
            extra = given[len(wanted) :]
            if any(p.default is p.empty and p.kind is not p.VAR_KEYWORD for p in extra):
                problems.append(f"{cls.__name__}.{name}: its parameters beyond {contract.__name__}'s need defaults")
    if issubclass(cls, ImageGenerator) and "sample" not in cls.__abstractmethods__:
        options = list(inspect.signature(cls.sample).parameters.values())[3:]
        names = {p.name for p in options}
        if any(p.kind is p.VAR_KEYWORD for p in options) or not names <= {"labels", *SAMPLER_OPTIONS}:
            problems.append(f"{cls.__name__}.sample takes {sorted(names)}, not only labels and {SAMPLER_OPTIONS}")
        if "labels" in names and not issubclass(cls, ConditionalModel):
            problems.append(f"{cls.__name__}.sample takes labels but it does not declare ConditionalModel")
    return problems


def built(compose_config, name: str) -> GenerativeModel:
    """The configured model, built for tiny data of its kind (labelled images, conditional where it can be)."""
    if name in ("transformer", "masked_lm"):
        cfg = compose_config("data=shakespeare", *TINY_LM_NET, f"model={name}")
        spec = DataSpec.of_text("tiny", CharTokenizer.from_text("ab\n"), 16, None)
    else:
        cfg = compose_config(f"model={name}", "data=digits")
        spec = DataSpec("image", (1, 8, 8), num_classes=10, name="digits")
        with open_dict(cfg):
            cfg.model.conditional = True
    return build_model(cfg, spec)


@pytest.mark.parametrize("name", MODELS)
def test_every_configured_model_keeps_its_contracts(compose_config, name: str) -> None:
    model = built(compose_config, name)
    declared = contracts_of(model)
    assert isinstance(model, ImageGenerator if model.spec.kind == "image" else SequenceGenerator), declared
    assert contract_problems(type(model)) == []
    for contract, attributes in ATTRIBUTES.items():
        if isinstance(model, contract):
            assert [a for a in attributes if not hasattr(model, a)] == [], (name, contract.__name__)
    if isinstance(model, ConditionalModel):
        assert model.conditioning.enabled and model.conditioning.num_classes == 10
    if isinstance(model, LatentImageGenerator):
        options = set(inspect.signature(model.generate).parameters) - {"z"}
        assert options <= set(inspect.signature(model.sample).parameters), options


def test_the_check_finds_a_family_that_breaks_its_contract() -> None:
    class Unfinished(ImageGenerator):
        pass

    class Wrong(LatentImageGenerator):
        def sample(self, n, seed, **options):  # no generator; a catch-all hides its options
            return None

        def noise(self, n, generator=None):
            return None

        def generate(self, z, labels=None):
            return None

    assert contract_problems(Unfinished) == ["Unfinished.sample is not implemented"]
    with pytest.raises(TypeError, match="abstract"):
        Unfinished()
    problems = contract_problems(Wrong)
    assert any("Wrong.sample(self, n, seed, **options) != ImageGenerator" in p for p in problems), problems
    assert any("Wrong.sample takes" in p for p in problems), problems
