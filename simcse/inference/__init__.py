"""Using a trained encoder: the ``SimCSE`` tool (encode, similarity, index and search;
:mod:`~simcse.inference.tool`) the export to a sentence-transformers folder
(:mod:`~simcse.inference.export`) and its model card (:mod:`~simcse.inference.card`).

Imports: the models (:mod:`simcse.modeling`) and the foundation (:mod:`simcse.errors`, :mod:`simcse.files`,
:mod:`simcse.search`); never evaluation or training.
"""
