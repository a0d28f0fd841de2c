"""Training runs: the dataclasses of train.py's flags (:mod:`~simcse.training.arguments`), the trainer
(:mod:`~simcse.training.trainers`, with gradient caching in :mod:`~simcse.training.gradcache` and
non-finite steps in :mod:`~simcse.training.nonfinite`), the
assembly of a run (:mod:`~simcse.training.run`: ``build_trainer``, ``train_model``), checkpoints that
survive kills (:mod:`~simcse.training.reliability`), and the entry points built on them: the demo, the
multi-seed runner and the training-log plots.

Imports: every lower layer (data, losses, models, evaluation, inference, the foundation); nothing imports
training except the scripts and the benches.
"""
