"""LightningDataModules that hold their splits as tensors in memory, and the DataSpec models check."""

from genlab.data.spec import DataSpec

__all__ = ["DataSpec"]
