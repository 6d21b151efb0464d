"""What a training set adds to an adapter: it is left out of ``--datasets all`` and yields shuffled samples.

The training loop draws from :meth:`TrainingSet.training_samples`: every epoch a fresh permutation of the ids from
a seeded generator (``numpy`` SeedSequence of (seed, epoch)), one sample decoded at a time.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from datasets.base import Sample


class TrainingSet:
    """Mixin for adapters of training data (HyperSim, Virtual KITTI 2); combine with a Dataset subclass."""

    evaluation = False  # not an evaluation benchmark: ``--datasets all`` leaves it out

    def epoch_order(self, seed: int, epoch: int) -> list[str]:
        """The ids in the order of ``epoch`` (a permutation that depends only on seed, epoch and the list)."""
        ids = self.ids()
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
        return [ids[i] for i in rng.permutation(len(ids))]

    def training_samples(self, seed: int = 0, epochs: Optional[int] = None, start_epoch: int = 0) -> Iterator[Sample]:
        """Samples epoch after epoch (forever when ``epochs`` is None), each epoch freshly shuffled."""
        if not self.ids():
            raise ValueError(f"{self.name}: no training samples")
        epoch = start_epoch
        while epochs is None or epoch < start_epoch + epochs:
            for sample_id in self.epoch_order(seed, epoch):
                yield self.load(sample_id)
            epoch += 1
