"""Evaluation as objects: each evaluation (STS dev, the transfer tasks, your own STS pairs, retrieval on
a BEIR-layout folder) is an :class:`~simcse.evaluation.base.Evaluator` with a name, its metrics and the
primary metric that selects checkpoints; :mod:`simcse.evaluation.dev` builds them from the flags for
training and ``evaluation.py``. Also here: the offline MTEB adapter (:mod:`simcse.evaluation.mteb_tasks`)
and the proxy retrieval sets built from local pair data (:mod:`simcse.evaluation.proxy_sets`).

Imports: the encoder, losses' diagnostics, the SentEval package and the foundation modules
(:mod:`simcse.errors`, :mod:`simcse.files`, :mod:`simcse.search`); never training or the scripts.
"""
