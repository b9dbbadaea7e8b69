"""Who genlab-serve lets in, from where, and for how long (genlab.serving.guard), in this process: the API key, the
refusal to serve other machines without one, CORS, and the per-request time limit. The key through the openai
client and the page in a browser are tests/test_serve.py's."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from requires import extra_hint

pytest.importorskip("fastapi", reason=extra_hint("serve"))
from fastapi.testclient import TestClient
from inprocess import call_entrypoint
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
from test_serve_app import ConditionalStandIn, stand_in_run

from genlab.errors import ConfigError
from genlab.serving.app import create_app
from genlab.serving.guard import TimeLimit, check_exposure, is_loopback
from genlab.serving.settings import ServeSettings

KEY = "sk-guard-test-key"


def client(tmp_path: Path, model=None, **settings) -> TestClient:
    app = create_app(stand_in_run(tmp_path, model or ConditionalStandIn()), ServeSettings(max_n=8, **settings))
    return TestClient(app)


def unauthorized(response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["message"].startswith(reason), error
    assert "Authorization: Bearer KEY" in error["message"]


@pytest.mark.parametrize("source", ["setting", "environment"])
def test_every_route_but_health_and_the_page_needs_the_key(source: str, tmp_path: Path, monkeypatch) -> None:
    if source == "environment":
        monkeypatch.setenv("GENLAB_API_KEY", KEY)
    with client(tmp_path, **({"api_key": KEY} if source == "setting" else {})) as open_to:
        assert open_to.get("/health").json() == {"status": "ok"}
        assert "api-key" in open_to.get("/").text  # the page, which asks for the key
        unauthorized(open_to.get("/info"), "no API key")
        unauthorized(open_to.post("/v1/images", json={"n": 1}), "no API key")
        for wrong in (KEY[:-1], KEY + "x", "", "Basic " + KEY):
            header = wrong if wrong.startswith("Basic") else f"Bearer {wrong}"
            response = open_to.post("/v1/images", json={"n": 1}, headers={"Authorization": header})
            unauthorized(response, "a wrong API key" if wrong and not wrong.startswith("Basic") else "no API key")
        bearer = {"Authorization": f"Bearer {KEY}"}
        drawn = open_to.post("/v1/images", json={"n": 2, "seed": 1}, headers=bearer)
        assert drawn.status_code == 200 and len(drawn.json()["data"]) == 2
        info = open_to.get("/info", headers=bearer).json()
        assert KEY not in str(info) and info["answers"]["4xx"] == 6  # the refusals are counted, the key never shown


def test_serving_other_machines_needs_a_key_or_saying_so(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_exposure(host, None, False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "myhost.example.org"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigError, match=f"host={host} serves other machines, and no API key is set"):
            check_exposure(host, None, False)
        check_exposure(host, KEY, False)
        check_exposure(host, None, True)

    # Through the entrypoint: refused before the run is even read.
    result = call_entrypoint("genlab-serve", ["run=nowhere", "host=0.0.0.0"], cwd=tmp_path, env={"PATH": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("genlab-serve: error: host=0.0.0.0 serves other machines") and "GENLAB_API_KEY" in line


def test_cors_is_off_unless_origins_are_listed(tmp_path: Path) -> None:
    preflight = {"Origin": "https://lab.example.org", "Access-Control-Request-Method": "POST"}
    with client(tmp_path) as closed:
        response = closed.post("/v1/images", json={"n": 1}, headers={"Origin": "https://lab.example.org"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in closed.options("/v1/images", headers=preflight).headers
    with client(tmp_path, cors_origins=["https://lab.example.org"], api_key=KEY) as listed:
        allowed = listed.options(
            "/v1/images", headers={**preflight, "Access-Control-Request-Headers": "authorization,content-type"}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://lab.example.org"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = listed.options("/v1/images", headers={**preflight, "Origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in other.headers


class SlowStandIn(ConditionalStandIn):
    """Takes `steps` tenths of a second to draw (the model thread is busy all that time)."""

    def sample(self, n: int, generator=None, labels=None, steps: int | None = None):
        time.sleep((steps or 0) / 10)
        return super().sample(n, generator, labels)


def test_a_request_over_the_time_limit_gets_504_and_the_server_goes_on(tmp_path: Path) -> None:
    model = SlowStandIn()
    with client(tmp_path, model, request_timeout=0.3, max_batch_size=1, batch_timeout=0.0) as slow:
        started = time.monotonic()
        response = slow.post("/v1/images", json={"n": 1, "steps": 6})
        assert time.monotonic() - started < 0.55  # answered at the limit, not when the model is done
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["type"] == "server_error" and "request_timeout=0.3 s" in error["message"]
        time.sleep(0.4)  # the model thread finishes the drawing nobody waits for any more (a pass is not cut)
        assert slow.post("/v1/images", json={"n": 1, "steps": 1}).status_code == 200

        # Two requests over the limit at once: the one still queued when it is given up is never drawn.
        model.calls.clear()
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(lambda s: slow.post("/v1/images", json={"n": 1, "steps": s}).status_code, (5, 4)))
        time.sleep(0.6)
        assert statuses == [504, 504] and sum(call[0] == "sample" for call in model.calls) == 1, model.calls
        assert slow.get("/info").json()["answers"] == {"5xx": 3, "2xx": 1}


def test_a_stream_over_the_time_limit_ends_with_an_error_event_and_stops_its_producer() -> None:
    stopped: list[bool] = []

    async def events(request):
        async def produce():
            try:
                for k in range(100):
                    yield f"data: {k}\n\n"
                    await asyncio.sleep(0.05)
            finally:
                stopped.append(True)  # what frees a completion's slots (its job is marked cancelled)

        return StreamingResponse(produce(), media_type="text/event-stream")

    app = TimeLimit(Starlette(routes=[Route("/stream", events)]), seconds=0.3)
    with TestClient(app) as streaming:
        body = streaming.get("/stream").text
    chunks = [chunk for chunk in body.split("\n\n") if chunk]
    assert 2 <= len(chunks) < 20 and chunks[0] == "data: 0"
    assert '"type": "server_error"' in chunks[-1] and "request_timeout=0.3 s" in chunks[-1]
    assert stopped == [True]
