"""The training loader's side of `steps_per_execution=K` (genlab.models.executions): K batches at once."""

from __future__ import annotations


class TrainsInBlocks:
    """A datamodule whose training loader can hand out K batches at a time: the same samples in the same order,
    its batch size K times larger, which the model cuts back into batches of `batch_size`."""

    #: Set by genlab-train from `steps_per_execution`.
    steps_per_execution: int = 1

    def training_block_size(self, batch_size: int) -> int:
        """The training loader's batch size for training batches of `batch_size`."""
        return batch_size * self.steps_per_execution
