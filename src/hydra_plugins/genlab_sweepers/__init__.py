"""genlab's Hydra plugins (Hydra instantiates plugins from the `hydra_plugins` namespace only)."""
