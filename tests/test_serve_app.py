"""genlab-serve's application in this process, with stand-in models: request fields that follow the model's
`sample` signature (labels and sampler steps, as conditional and diffusion models will take them), a model that
fails, the command's settings and the [serve] extra. The server as a process is tests/test_serve.py's."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from requires import extra_hint

pytest.importorskip("fastapi", reason=extra_hint("serve"))
import torch
from fastapi.testclient import TestClient
from inprocess import call_entrypoint
from omegaconf import OmegaConf
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.contracts import LatentImageGenerator
from genlab.run.loading import LoadedRun
from genlab.serving.app import create_app
from genlab.serving.settings import ServeSettings
from genlab.serving.text import visible_text


class ConditionalStandIn(nn.Module, LatentImageGenerator):
    """An image model as a conditional (issue 13) or diffusion (issue 12) model will look to the server: `sample`
    takes labels and steps; `generate` takes labels only, so requests with steps are drawn one by one. Label 9 makes
    `generate` fail (a bug), steps=13 makes `sample` fail, steps=14 is refused as a bad setting."""

    judged_metric = "val/fid"
    judged_mode = "min"

    def __init__(self) -> None:
        super().__init__()
        self.spec = DataSpec("image", (1, 2, 2), num_classes=10, name="stand-in")
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[str, int, dict]] = []

    @property
    def device(self) -> torch.device:
        return self.scale.device

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand((n, 4), generator=generator)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(("generate", len(z), {"labels": None if labels is None else labels.tolist()}))
        if labels is not None and (labels == 9).any():
            raise RuntimeError("label 9 breaks this model\nsecond line")
        shift = 0 if labels is None else labels.view(-1, 1) / 10
        return ((z + shift) % 1).view(-1, 1, 2, 2)

    def sample(self, n: int, generator=None, labels=None, steps: int | None = None) -> torch.Tensor:
        self.calls.append(("sample", n, {"steps": steps}))
        if steps == 13:
            raise RuntimeError("13 steps break this model")
        if steps == 14:
            raise ConfigError("steps=14 is more than this model's schedule has")
        return self.generate(self.noise(n, generator), labels)


def stand_in_run(tmp_path: Path, model: nn.Module) -> LoadedRun:
    config = OmegaConf.create({"model": {"_target_": "stand.In"}, "data": {"path": str(tmp_path)}, "seed": 0})
    manifest = {"status": "completed", "cwd": str(tmp_path), "command": f"genlab-train data.path={tmp_path}/x.txt"}
    return LoadedRun(tmp_path / "stand-in", config, {"val/fid": 1.5}, manifest, tmp_path / "best.ckpt", model)


@pytest.fixture
def stand_in(tmp_path: Path):
    model = ConditionalStandIn()
    settings = ServeSettings(max_batch_size=4, batch_timeout=0.2, max_n=8)
    with TestClient(create_app(stand_in_run(tmp_path, model), settings)) as client:
        yield model, client


def images(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["b64_json"] for item in response.json()["data"]]


def test_request_fields_follow_the_models_sample_signature(stand_in, tmp_path: Path) -> None:
    model, client = stand_in
    fields = client.get("/openapi.json").json()["components"]["schemas"]["ImagesRequest"]["properties"]
    assert set(fields) == {"n", "seed", "response_format", "label", "steps"}
    assert fields["label"]["anyOf"][0]["maximum"] == 9

    labelled = images(client.post("/v1/images", json={"n": 2, "seed": 1, "label": 3}))
    assert model.calls[-1] == ("generate", 4, {"labels": [3, 3, 0, 0]})  # a pass of max_batch_size rows
    assert images(client.post("/v1/images", json={"n": 2, "seed": 1})) != labelled
    images(client.post("/v1/images", json={"n": 2, "seed": 1, "steps": 5}))
    assert model.calls[-2] == ("sample", 2, {"steps": 5})  # generate() takes no steps: drawn alone

    assert client.post("/v1/images", json={"label": 10}).json()["error"]["message"] == (
        "label: Input should be less than or equal to 9"
    )
    assert client.post("/v1/images", json={"guidance": 2.0}).json()["error"]["message"] == (
        "guidance: this model's sample() takes no guidance"
    )
    info = client.get("/info").json()
    assert info["request_fields"] == list(fields) and info["judged_metric"]["value"] == 1.5
    assert info["config"]["data"]["path"] == tmp_path.name and info["manifest"]["command"].endswith("data.path=x.txt")
    assert "cwd" not in info["manifest"] and str(tmp_path) not in str(info)


def test_a_model_failure_is_a_500_for_that_request_only_and_the_next_one_is_served(stand_in) -> None:
    model, client = stand_in
    failed = client.post("/v1/images", json={"steps": 13})
    assert failed.status_code == 500
    assert failed.json()["error"] == {
        "message": "the model failed on this request: RuntimeError: 13 steps break this model",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    refused = client.post("/v1/images", json={"steps": 14})
    assert refused.status_code == 400 and refused.json()["error"]["message"] == (
        "steps=14 is more than this model's schedule has"
    )

    alone = images(client.post("/v1/images", json={"n": 1, "seed": 2, "label": 1}))
    bodies = [{"n": 1, "seed": seed, "label": label} for seed, label in ((2, 1), (3, 9), (4, 2))]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda body: client.post("/v1/images", json=body), bodies))
    assert [r.status_code for r in together] == [200, 500, 200]
    assert "label 9 breaks this model" in together[1].json()["error"]["message"]
    assert images(together[0]) == alone  # the failed shared pass was retried request by request
    shared = [call for call in model.calls if sorted(call[2].get("labels") or []) == [0, 1, 2, 9]]
    assert shared, "the three requests never shared a pass"
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/info").json()["answers"]["5xx"] == 2


def test_a_model_that_declares_neither_serving_contract_is_refused_in_one_line(tmp_path: Path) -> None:
    """What the server can serve is what a model declares (genlab.models.contracts), not what its methods are
    called: a stand-in with a `sample` method but no ImageGenerator declared is refused."""

    class Undeclared(nn.Module):
        spec = DataSpec("image", (1, 2, 2), name="stand-in")

        def sample(self, n: int, generator=None) -> torch.Tensor:
            return torch.zeros(n, 1, 2, 2)

    refusal = r"^genlab-serve serves image and text generators; Undeclared declares no contract"
    with pytest.raises(ConfigError, match=refusal):
        create_app(stand_in_run(tmp_path, Undeclared()), ServeSettings())


@pytest.mark.parametrize(
    ("text", "stop", "finished", "visible"),
    [
        ("hello wor", ["world"], False, ("hello ", False)),  # "wor" may become "world": held back
        ("hello world!", ["world"], False, ("hello ", True)),
        ("hello wor", ["world"], True, ("hello wor", False)),
        ("caf\ufffd", [], False, ("caf", False)),  # an incomplete UTF-8 character waits for its next byte
        ("ab", ["b", "ab"], False, ("", True)),
    ],
)
def test_text_is_sent_up_to_a_possible_stop_sequence(text, stop, finished, visible) -> None:
    assert visible_text(text, stop, finished) == visible


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["max_batch_size=0"], "max_batch_size=0 is not allowed: expected an integer > 0"),
        (["port=70000"], "port=70000 is not allowed: expected an integer >= 1 and <= 65535"),
        (["batch_invariant=maybe"], "batch_invariant='maybe' is not allowed: expected true or false"),
        (["log_level=loud"], "log_level='loud' is not allowed: expected one of 'critical', 'error'"),
        (["max_batchsize=2"], "max_batchsize is not a genlab-serve setting (did you mean max_batch_size?)"),
        ([], "give the run folder: run=outputs/train/runs/<date>_<time>_<id>"),
    ],
)
def test_bad_settings_are_one_line(arguments: list[str], message: str, tmp_path: Path) -> None:
    run = [] if not arguments else [f"run={tmp_path}"]
    result = call_entrypoint("genlab-serve", [*run, *arguments], cwd=tmp_path, env={})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("genlab-serve: error: ") and message in line


def test_without_the_serve_extra_genlab_serve_says_which_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what `import fastapi` meets when it is not installed
    result = call_entrypoint("genlab-serve", [f"run={tmp_path}"], cwd=tmp_path, env={})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'genlab-serve: error: genlab-serve needs fastapi, which is not installed: pip install "genlab[serve]"'
    )


def test_genlab_and_its_other_commands_do_not_import_the_serving_stack() -> None:
    probe = (
        "import sys, genlab, genlab.train, genlab.eval, genlab.sample, genlab.compare, genlab.serve\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'genlab.serving.app') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
