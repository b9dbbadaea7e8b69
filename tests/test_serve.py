"""genlab-serve as users run it: the console script as a process on a free port, one per model kind (each costs about
10 s of imports), called over HTTP with real clients (httpx, the openai client, headless Chromium), and stopped with
SIGTERM. The runs it serves are tiny ones trained in this process."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from requires import extra_hint, requires_programs

pytest.importorskip("fastapi", reason=extra_hint("serve"))
pytest.importorskip("uvicorn", reason=extra_hint("serve"))
from conftest import QUIET_TRAIN, TINY_LM_NET, train_env
from inprocess import call_entrypoint, console_script
from PIL import Image

QUIET = [*QUIET_TRAIN, "metrics=none"]
VAE = [
    "test=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "model.eval_iwae_k=0",
    "callbacks.samples.every_n_epochs=1000",
    *QUIET,
]
LM = [*TINY_LM_NET, "data=python_source", "data.max_chars=20000", "data.steps_per_epoch=3", "trainer.max_epochs=1"]
LM += ["test=false", "model.sample_tokens=8", *QUIET]
#: A masked LM (MDLM) on the same data: its completions are unmasked whole, in 4 steps, within its 16-token window.
MASKED_LM = ["model=masked_lm", *(o for o in LM if o != "model=transformer"), "model.sample_steps=4"]
#: Small limits, so that the tests of them are cheap; passes of 8 rows; a long batch_timeout so that requests sent
#: together are batched together even on a busy machine.
#: The text server wants this key (the image server none): the openai client and the page send it.
TEXT_KEY = "sk-genlab-test-0123456789"
LIMITS = ["max_batch_size=8", "batch_timeout=0.1", "max_n=16", "max_tokens=300", "max_request_bytes=4096"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One `genlab-serve` process; its output goes to a file (a full pipe would stall it)."""

    def __init__(self, run_dir: Path, log: Path, env: dict[str, str], key: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        #: The API key the server wants (from GENLAB_API_KEY, as a user keeps it off the command line), if any.
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        env = {**env, "GENLAB_API_KEY": key} if key else env
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [console_script("genlab-serve"), f"run={run_dir}", f"port={self.port}", *LIMITS],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_until_up(self, timeout: float = 240) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"genlab-serve exited:\n{self.output()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"genlab-serve did not answer within {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60, headers=self.headers)

    def post(self, path: str, body: object = None, **kwargs) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return httpx.post(self.url + path, timeout=60, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def servers(folder: Path) -> Iterator[dict[str, Server]]:
    """A VAE, a language model and a masked LM trained here, each served by its own process: a server imports while
    the next run trains. The runs get absolute folders, which their manifests record and /info must not show."""
    env = train_env(folder / "outputs")
    server_env = {**env, "OMP_NUM_THREADS": "1"}
    started: dict[str, Server] = {}
    try:
        for name, overrides, key in (("image", VAE, None), ("text", LM, TEXT_KEY), ("masked", MASKED_LM, None)):
            run_dir = folder / "outputs" / name
            result = call_entrypoint("genlab-train", [*overrides, f"hydra.run.dir={run_dir}"], cwd=folder, env=env)
            assert result.returncode == 0, result.stderr[-3000:]
            started[name] = Server(run_dir, folder / f"{name}_server.log", server_env, key)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def image_server(servers: dict[str, Server]) -> Server:
    return servers["image"].wait_until_up()


@pytest.fixture(scope="module")
def text_server(servers: dict[str, Server]) -> Server:
    return servers["text"].wait_until_up()


def pngs(response: httpx.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"], body
    return body["error"]["message"]


async def post_together(server: Server, path: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=server.headers) as client:
        return list(await asyncio.gather(*(client.post(path, json=body) for body in bodies)))


# -- an image model ------------------------------------------------------------------------------------------------


def test_health_info_docs_and_the_page(image_server: Server, folder: Path) -> None:
    assert image_server.get("/health").json() == {"status": "ok"}
    info = image_server.get("/info").json()
    metrics = json.loads((folder / "outputs" / "image" / "metrics.json").read_text())
    assert info["model"]["class"] == "VAE" and info["model"]["kind"] == "image"
    assert info["data_spec"]["shape"] == [1, 8, 8] and info["data_spec"]["num_classes"] == 10
    assert info["judged_metric"] == {"name": "val/elbo", "mode": "min", "value": metrics["val/elbo"]}
    assert info["config"]["model"]["_target_"] == "genlab.models.vae.VAE"
    assert info["manifest"]["status"] == "completed" and info["run"]["folder"] == "image"
    assert info["endpoint"] == "POST /v1/images" and info["request_fields"] == ["n", "seed", "response_format"]
    assert info["batching"] == {"max_batch_size": 8, "batch_timeout": 0.1, "batch_invariant": True}
    text = json.dumps(info)
    assert str(folder) not in text and '"/' not in text and "hydra.run.dir=image" in text, "a path of the server"

    schema = image_server.get("/openapi.json").json()
    fields = schema["components"]["schemas"]["ImagesRequest"]["properties"]
    assert set(fields) == {"n", "seed", "response_format"} and fields["n"]["maximum"] == 16
    assert "swagger" in image_server.get("/docs").text.lower()
    page = image_server.get("/")
    assert page.headers["content-type"].startswith("text/html") and "/v1/images" in page.text
    assert "http://" not in page.text and "https://" not in page.text, "the page loads nothing from elsewhere"


def test_images_as_pngs_or_one_grid_and_the_same_seed_gives_the_same_bytes(image_server: Server) -> None:
    first = pngs(image_server.post("/v1/images", {"n": 4, "seed": 3}))
    assert len(first) == 4 and {Image.open(io.BytesIO(png)).size for png in first} == {(8, 8)}
    assert pngs(image_server.post("/v1/images", {"n": 4, "seed": 3})) == first
    assert pngs(image_server.post("/v1/images", {"n": 4, "seed": 4})) != first

    grid = image_server.post("/v1/images", {"n": 4, "seed": 3, "response_format": "png"})
    assert grid.headers["content-type"] == "image/png" and grid.headers["x-genlab-seed"] == "3"
    assert Image.open(io.BytesIO(grid.content)).size == (2 * 10 + 2, 2 * 10 + 2)  # 2 x 2 images, 2-px gaps

    drawn = image_server.post("/v1/images", {})  # no seed: a random one, reported
    seed = drawn.json()["seed"]
    assert pngs(image_server.post("/v1/images", {"seed": seed})) == pngs(drawn)


def test_requests_sent_together_are_batched_and_each_gets_what_it_gets_alone(image_server: Server) -> None:
    alone = pngs(image_server.post("/v1/images", {"n": 2, "seed": 5}))
    bodies = [{"n": 2, "seed": seed} for seed in range(12)]
    responses = asyncio.run(post_together(image_server, "/v1/images", bodies))

    assert [r.status_code for r in responses] == [200] * 12
    assert pngs(responses[5]) == alone
    assert len({tuple(pngs(r)) for r in responses}) == 12
    shared = [int(r.headers["x-genlab-batch-requests"]) for r in responses]
    assert max(shared) > 1 and max(shared) <= 4  # 8 rows per pass, 2 images per request
    batches = image_server.get("/info").json()["batches"]
    assert 1 < batches["max_requests_per_pass"] <= 4
    assert sum(batches["requests_per_pass"].values()) == batches["passes"]


BAD_IMAGE_REQUESTS = [
    ({"n": 0}, 400, "n: Input should be greater than or equal to 1"),
    ({"n": 17}, 400, "n: Input should be less than or equal to 16"),
    ({"n": "3"}, 400, "n: Input should be a valid integer"),
    ({"seed": -1}, 400, "seed: Input should be greater than or equal to 0"),
    ({"label": 3}, 400, "label: this model's sample() takes no label"),
    ({"steps": 10}, 400, "steps: this model's sample() takes no steps"),
    ({"colour": "red"}, 400, "colour: unknown field; this endpoint takes n, seed, response_format"),
    ({"response_format": "jpeg"}, 400, "response_format: Input should be 'b64_json' or 'png'"),
    ([1, 2], 400, "the body must be a JSON object"),
    ({"pad": "x" * 5000}, 413, "the request body is larger than max_request_bytes=4096 bytes"),
]


def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_the_server_goes_on(image_server: Server) -> None:
    for body, status, message in BAD_IMAGE_REQUESTS:
        assert error(image_server.post("/v1/images", body), status) == message, body
    broken = image_server.post("/v1/images", content=b'{"n": 2', headers={"content-type": "application/json"})
    assert error(broken, 400).startswith("the body is not valid JSON")
    assert "no route POST /v1/completions; this server has POST /v1/images" in error(
        image_server.post("/v1/completions", {"prompt": "a"}), 404
    )
    assert error(image_server.get("/v1/images"), 405).startswith("no route GET /v1/images")

    assert len(pngs(image_server.post("/v1/images", {"n": 1, "seed": 0}))) == 1
    answers = image_server.get("/info").json()["answers"]
    assert answers["4xx"] >= len(BAD_IMAGE_REQUESTS) + 3 and "5xx" not in answers


# -- a language model ------------------------------------------------------------------------------------------


def openai_client(server: Server, key: str | None = None):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or server.key or "unused", max_retries=0)


def test_completions_through_the_openai_client_plain_and_streamed(text_server: Server) -> None:
    import openai

    for wrong in ("sk-wrong", TEXT_KEY[:-1]):
        with pytest.raises(openai.AuthenticationError) as caught:
            openai_client(text_server, wrong).completions.create(model="genlab", prompt="a", max_tokens=2)
        assert caught.value.code == "invalid_api_key" and "a wrong API key" in caught.value.message
    assert httpx.get(f"{text_server.url}/info").status_code == 401
    assert httpx.get(f"{text_server.url}/health").json() == {"status": "ok"}
    client = openai_client(text_server)
    arguments = {"model": "genlab", "prompt": "def f", "max_tokens": 12, "seed": 1, "temperature": 0.8}
    plain = client.completions.create(**arguments)
    (choice,) = plain.choices
    assert len(choice.text) == 12 and choice.finish_reason == "length"  # one character per token (char tokenizer)
    assert plain.usage.completion_tokens == 12 and plain.usage.prompt_tokens == len("def f")
    assert client.completions.create(**arguments).choices[0].text == choice.text

    chunks = list(client.completions.create(**arguments, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert len(chunks) > 3 and chunks[-1].usage.completion_tokens == 12

    stop = choice.text[6:8]  # a stop sequence the same seed will meet: the text ends before its first occurrence
    stopped = client.completions.create(**arguments, stop=[stop, "never"]).choices[0]
    assert stopped.text == choice.text[: choice.text.find(stop)] and stopped.finish_reason == "stop"
    streamed = client.completions.create(**arguments, stop=[stop, "never"], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == stopped.text

    many = client.completions.create(
        model="genlab", prompt=["def", "class"], n=2, max_tokens=5, seed=7, echo=True, extra_body={"top_k": 3}
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert [c.text[:-5] for c in many.choices] == ["def", "def", "class", "class"]
    assert many.choices[0].text != many.choices[1].text  # choice i is drawn from seed + i


def test_completions_sent_together_are_decoded_together(text_server: Server) -> None:
    body = {"prompt": "import", "max_tokens": 40, "seed": 4, "top_p": 0.9}
    alone = text_server.post("/v1/completions", body).json()["choices"][0]["text"]
    bodies = [{**body, "seed": seed, "max_tokens": 20 + 5 * seed, "n": 1 + seed % 2} for seed in range(8)]
    bodies[4] = body
    responses = asyncio.run(post_together(text_server, "/v1/completions", bodies))

    assert [r.status_code for r in responses] == [200] * 8
    assert responses[4].json()["choices"][0]["text"] == alone
    assert max(int(r.headers["x-genlab-batch-requests"]) for r in responses) > 1
    batches = text_server.get("/info").json()["batches"]
    assert batches["max_requests_per_pass"] > 1 and batches["rows"] > batches["passes"]


def test_bad_completions_get_a_4xx_and_the_server_goes_on(text_server: Server) -> None:
    import openai

    client = openai_client(text_server)
    refused = {
        "presence_penalty: unknown field; this endpoint takes model, prompt,": {"presence_penalty": 0.5},
        "max_tokens: Input should be less than or equal to 300": {"max_tokens": 301},
        "n x prompts = 3 x 6 completions; at most max_n=16 per request": {"n": 3, "prompt": ["a"] * 6},
        "stop: at most 4 sequences": {"stop": ["a", "b", "c", "d", "e"]},
        "the text has characters outside the char vocabulary ('\u2603')": {"prompt": "\u2603"},
        "temperature: Input should be less than or equal to 2": {"temperature": 3},
    }
    for message, arguments in refused.items():
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(**{"model": "genlab", "prompt": "a", **arguments})
        assert message in caught.value.message, arguments
    assert error(text_server.post("/v1/images", {"n": 1}), 404).startswith("no route POST /v1/images")
    assert len(client.completions.create(model="genlab", prompt="a", max_tokens=3).choices[0].text) == 3


# -- the page in a browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium from Debian's packages, driven by Selenium."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,800"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield session
    session.quit()


def screenshot(browser, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")


@requires_programs("chromium", "chromedriver")
def test_the_page_draws_a_grid_for_a_seed_in_chromium(image_server: Server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(image_server.url + "/")
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text.startswith("16 images"))
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("7")
    browser.find_element(By.ID, "generate-images").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text == "16 images, seed 7")
    grid = browser.find_element(By.ID, "grid")
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return arguments[0].naturalWidth", grid) > 0)
    assert grid.get_attribute("data-seed") == "7"
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", grid) == [42, 42]
    assert browser.find_element(By.ID, "title").text == "VAE on digits"
    screenshot(browser, tmp_path, "serve_page_images.png")


def complete_on_the_page(browser, server: Server, prompt: str, max_tokens: int) -> tuple[str, str]:
    """On the page, once ready: the completion of `prompt` it shows, and the one the openai client gets (seed 0)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "prompt").send_keys(prompt)
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    browser.find_element(By.ID, "generate-text").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text.startswith("done"))
    generated = browser.execute_script("return document.getElementById('generated').textContent")
    expected = openai_client(server).completions.create(
        model="genlab", prompt=prompt, max_tokens=max_tokens, temperature=0.8, seed=0
    )
    return generated, expected.choices[0].text


@requires_programs("chromium", "chromedriver")
def test_the_page_streams_a_completion_in_chromium(text_server: Server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(text_server.url + "/")
    WebDriverWait(browser, 60).until(lambda b: "no API key" in b.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "api-key").send_keys(TEXT_KEY + "\n")  # the page asks for the server's key
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text == "ready")
    generated, expected = complete_on_the_page(browser, text_server, "def main", 40)
    assert generated == expected and len(generated) == 40
    assert browser.find_element(By.ID, "prompt-echo").text == "def main"
    screenshot(browser, tmp_path, "serve_page_text.png")


@requires_programs("chromium", "chromedriver")
def test_the_page_completes_a_prompt_with_a_masked_lm_in_chromium(
    servers: dict[str, Server], browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = servers["masked"].wait_until_up()
    browser.get(server.url + "/")
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text == "ready")
    generated, expected = complete_on_the_page(browser, server, "def ", 10)
    assert generated == expected and len(generated) == 10
    screenshot(browser, tmp_path, "serve_page_masked_lm.png")


def test_the_page_inpaints_what_is_painted_on_its_canvas_in_chromium(image_server: Server, browser, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(image_server.url + "/")
    canvas = browser.find_element(By.ID, "canvas")
    WebDriverWait(browser, 60).until(lambda b: canvas.get_attribute("width") == "8")  # the digit, at its own size
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(30, 30).release().perform()
    painted = browser.execute_script("return editing.fill.reduce((sum, pixel) => sum + pixel, 0)")
    assert 0 < painted < 64
    browser.find_element(By.ID, "inpaint").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "status").text.startswith("inpainted"))
    edited = browser.find_element(By.ID, "edited")
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return arguments[0].naturalWidth", edited) > 0)
    assert browser.execute_script("return arguments[0].naturalWidth", edited) == 42  # the grid of 16 completions
    screenshot(browser, tmp_path, "serve_page_inpainting.png")


# -- stopping ------------------------------------------------------------------------------------------------------


def test_sigterm_finishes_the_requests_in_flight_and_stops_cleanly(text_server: Server, image_server: Server) -> None:
    text, image = text_server, image_server
    body = {"prompt": "a", "max_tokens": 300, "stream": True}
    with httpx.stream("POST", f"{text.url}/v1/completions", json=body, timeout=120, headers=text.headers) as response:
        events = response.iter_lines()
        assert next(events).startswith("data: ")
        text.process.send_signal(signal.SIGTERM)
        image.process.send_signal(signal.SIGTERM)
        rest = [line for line in events if line]
    assert rest[-1] == "data: [DONE]" and len(rest) >= 300  # the stream in flight was finished
    for server in (text, image):
        assert server.process.wait(60) == -signal.SIGTERM  # uvicorn shuts down, then ends by the signal
        output = server.output()
        assert "Application shutdown complete" in output and "Traceback" not in output, output[-3000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{text.url}/health")
