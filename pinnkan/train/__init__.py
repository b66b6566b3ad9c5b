"""Training: the loop, its state and history, and one module per optimizer.

The built-in optimizers register themselves on import (`pinnkan.train.optimizers`); importing
them here makes every `optim=` name known wherever any part of this package is used."""

from pinnkan.train import first_order, lm_loop  # noqa: F401  (registers adam, gd, lm)
