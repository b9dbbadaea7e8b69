"""User errors become one line and exit status 2; bugs keep their traceback."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from lightning_fabric.utilities.exceptions import MisconfigurationException

from genlab.errors import ConfigError, DataError, exit_on_user_error


def run(exc: BaseException, capsys) -> tuple[list[int], str]:
    codes: list[int] = []
    with exit_on_user_error("genlab-x", exit=codes.append):
        raise exc
    return codes, capsys.readouterr().err


def wrapped(inner: Exception) -> InstantiationException:
    try:
        try:
            raise inner
        except Exception as cause:
            raise InstantiationException("Error in call to target 'genlab.models.vae.VAE'") from cause
    except InstantiationException as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (DataError("mnist is not in /x"), "genlab-x: error: mnist is not in /x\n"),
        (wrapped(ConfigError("model.beta must be >= 0")), "genlab-x: error: model.beta must be >= 0\n"),
        (wrapped(TypeError("unexpected keyword 'latent_size'")), "genlab-x: error: Error in call to target"),
        (MisconfigurationException("No supported gpu\nbackend found!"), "genlab-x: error: No supported gpu backend"),
    ],
)
def test_user_errors_are_one_line_with_status_2(exc, line, capsys) -> None:
    codes, err = run(exc, capsys)
    assert codes == [2]
    assert err.startswith(line)
    assert err.count("\n") == 1


def test_bugs_are_not_hidden(capsys) -> None:
    with pytest.raises(ZeroDivisionError):
        run(ZeroDivisionError("bug"), capsys)
