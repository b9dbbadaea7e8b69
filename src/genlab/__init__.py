"""genlab: train, sweep and compare generative models with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
