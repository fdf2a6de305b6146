"""Training a preset on a dataset: the loop, its config and resume rules, and what a run writes.

- :mod:`sdit.training.train`: :func:`~sdit.training.train.train`, the entry point: checks the run
  directory and the resume, builds the model, runs the loop on every rank, writes the summary.
- :mod:`sdit.training.config`: :class:`~sdit.training.config.TrainConfig` (what determines a run),
  what a resume may change, and reading a run's saved config back.
- :mod:`sdit.training.schedule`: the learning-rate schedule, the run's length, and randomness as a
  function of (seed, step): the data order of an epoch, the timesteps and noise of a step.
- :mod:`sdit.training.loop`: the optimisation loop of one rank (steps, logging, sample grids,
  checkpoints, stopping on a non-finite loss or Ctrl-C).
- :mod:`sdit.training.state`: the optimizer, and the training state a checkpoint carries beside the
  weights (optimizer, EMA, RNG, data position), saved and restored.
- :mod:`sdit.training.metrics`: the metrics record of one logging interval, summed over ranks.
- :mod:`sdit.training.firing_rate`: the firing-rate meter on the LIF layers.
- :mod:`sdit.training.run_files`: the files of a run directory besides checkpoints.

This file imports none of them, so importing one module loads only what that module needs.
"""
