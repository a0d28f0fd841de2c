"""Models and poolers: the contrastive wrappers around a Hugging Face backbone (:mod:`~simcse.modeling.models`),
the pooler records (:mod:`~simcse.modeling.poolers`), inference encoding (:mod:`~simcse.modeling.encoder`),
the frozen guide of guided losses (:mod:`~simcse.modeling.guide`) and the checkpoint conversion to a
plain Hugging Face model (:mod:`~simcse.modeling.convert`).

Imports: the foundation (:mod:`simcse.errors`, :mod:`simcse.files`) and the SentEval package's device rule;
never data, losses, evaluation, inference or training.
"""
