"""`genlab-serve run=RUN_DIR [port=8000] [...]`: serve a trained run over HTTP (FastAPI + uvicorn, the [serve] extra).

Light like the other entrypoints: the serving stack, torch and Lightning are imported once the settings are checked.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from genlab.commands import run_command
from genlab.extras import import_extra
from genlab.serving.settings import ServeSettings

#: The types of genlab-serve's own settings (conf/serve.yaml).
SETTINGS = {"run": str | None, "ckpt": str, **ServeSettings.types()}


def serve(cfg: DictConfig, overrides: list[str]) -> None:
    """Load the run once and serve it until SIGINT or SIGTERM (uvicorn then finishes the requests in flight)."""
    for module in ("fastapi", "uvicorn"):
        import_extra(module, "serve", "genlab-serve")
    own = OmegaConf.to_container(cfg, resolve=True)
    settings = ServeSettings(**{key: value for key, value in own.items() if key not in ("run", "ckpt", "threads")})
    from genlab.serving.guard import api_key_of, check_exposure

    key = api_key_of(settings.api_key)
    check_exposure(settings.host, key, settings.allow_unauthenticated)  # before the run is loaded
    import uvicorn

    from genlab.run.loading import load_run
    from genlab.serving.app import create_app

    run = load_run(cfg.run, cfg.ckpt, device=settings.device, overrides=overrides)
    app = create_app(run, settings)
    print(
        f"genlab-serve: {type(run.model).__name__} of {run.dir.name} at http://{settings.host}:{settings.port}/ "
        f"(API schema at /docs; {'requests need the API key' if key else 'no API key: open to whoever reaches it'})",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=30)


def main() -> None:
    """The `genlab-serve` console script."""
    run_command("genlab-serve", "serve", SETTINGS, serve)


if __name__ == "__main__":
    main()
