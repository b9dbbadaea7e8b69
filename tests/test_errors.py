"""User errors become one line and exit status 2; bugs keep their traceback."""

from __future__ import annotations

import json
from contextlib import nullcontext

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
    with pytest.raises(InstantiationException):  # a bug inside a constructor is not a config error
        run(wrapped(ZeroDivisionError("bug in __init__")), capsys)


def test_manifest_records_how_a_run_ended(tmp_path) -> None:
    from genlab.run.manifest import Manifest

    outcomes = {"ok": None, "interrupted": KeyboardInterrupt(), "failed": DataError("mnist is not in /x")}
    for name, exc in outcomes.items():
        manifest = Manifest(tmp_path / name, seed=3, overrides=["seed=3"])
        with pytest.raises(BaseException) if exc else nullcontext(), manifest.track():
            assert json.loads(manifest.path.read_text())["status"] == "running"
            if exc:
                raise exc
        written = json.loads(manifest.path.read_text())
        assert written["status"] == {"ok": "completed"}.get(name, name)
        assert written["error"] == ("DataError: mnist is not in /x" if name == "failed" else None)
        assert written["ended_at"] and written["seed"] == 3
