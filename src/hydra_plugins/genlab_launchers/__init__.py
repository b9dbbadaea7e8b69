"""genlab's Hydra launchers: a job whose process dies is a failed job of the sweep, not the end of it."""
