"""`genlab-serve run=RUN_DIR [port=8000] [...]`: serve a trained run over HTTP (FastAPI + uvicorn, the [serve] extra).

Light like the other entrypoints: the serving stack, torch and Lightning are imported once the settings are checked.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from genlab.commands import run_command
from genlab.errors import ConfigError
from genlab.extras import import_extra


def serve(cfg: DictConfig, overrides: list[str]) -> None:
    """Load the run once and serve it until SIGINT or SIGTERM (uvicorn then finishes the requests in flight)."""
    for module in ("fastapi", "uvicorn"):
        import_extra(module, "serve", "genlab-serve")
    from genlab.serving.settings import ServeSettings

    own = OmegaConf.to_container(cfg, resolve=True)
    settings = ServeSettings.from_config({key: value for key, value in own.items() if key not in ("run", "ckpt")})
    import uvicorn

    from genlab.runs import load_run
    from genlab.serving.app import create_app

    check_device(settings.device)
    run = load_run(cfg.run, cfg.ckpt, device=settings.device, overrides=overrides)
    app = create_app(run, settings)
    print(
        f"genlab-serve: {type(run.model).__name__} of {run.dir.name} at http://{settings.host}:{settings.port}/ "
        f"(API schema at /docs)",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=30)


def check_device(name: str) -> None:
    """One line for a device torch does not know or this machine does not have."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: this machine has no CUDA device; use device=cpu")


def main() -> None:
    """The `genlab-serve` console script."""
    run_command("genlab-serve", "serve", serve)


if __name__ == "__main__":
    main()
