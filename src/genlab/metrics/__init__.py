"""Metrics with their units stated: likelihood bounds in nats and bits per dimension, latent usage."""
