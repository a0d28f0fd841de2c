"""``python -m simcse.mine``: hard negatives for a pair file, written as a training file ``train.py`` reads.

    python -m simcse.mine --pairs pairs.csv --model_name_or_path MODEL --output mined.csv \\
        [--corpus corpus.txt] [--num_negatives 1] [--range_min 0] [--range_max N] \\
        [--absolute_margin M | --relative_margin R] [--max_score S] [--min_score S] \\
        [--cross_encoder LOCAL_DIR] [--use_faiss] [--cache_dir DIR]

The pair file is any training file (.csv, .tsv, .json, .jsonl): its first two sentence columns are the
anchor and the positive (further columns, such as an existing ``hard_neg``, are ignored). The corpus is a
.txt file (one text a line) or any training file (all its sentence columns); without one, the positives
are the corpus. The output has the columns ``sent0, sent1, hard_neg`` (``hard_neg_1 .. hard_neg_k`` for
several), and ``<output>.json`` reports what was kept and dropped, per reason, and the time per stage.
Embeddings and retrieved candidates are kept under ``--cache_dir`` (default ``<output>.cache``): a killed
run resumes there, and a rerun with the same model and texts reuses them.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from simcse.data.reading import column_roles, load_training_dataset
from simcse.errors import SimCSEError
from simcse.files import atomic_file, atomic_write_json
from simcse.mine.embeddings import embed_texts, model_digest
from simcse.mine.mining import Mined, mine_hard_negatives
from simcse.mine.select import Selection


def _help(text: str, kind=str, **extra):
    return {"help": text, "type": kind, **extra}


@dataclass
class MiningArguments:
    pairs: str = field(metadata=_help("pair file (anchor, positive): .csv/.tsv/.json/.jsonl", required=True))
    model_name_or_path: str = field(metadata=_help("the embedding model: a train.py checkpoint, a Hugging Face "
                                                   "or sentence-transformers folder", required=True))
    output: str = field(metadata=_help("the training file to write (.csv)", required=True))
    corpus: str | None = field(default=None, metadata=_help("texts to mine from (.txt or a training file); "
                                                            "default: the positives"))
    pooler: str | None = field(default=None, metadata=_help("pooler (default: what the model records)"))
    max_seq_length: int | None = field(default=None, metadata=_help("truncation length (default: the model's)",
                                                                    int))
    batch_size: int = field(default=64, metadata=_help("encoding batch size", int))
    device: str | None = field(default=None, metadata=_help("cuda, cpu, ... (default: cuda when available)"))
    num_negatives: int = field(default=1, metadata=_help("negatives per pair", int))
    range_min: int = field(default=0, metadata=_help("skip this many best-ranked candidates", int))
    range_max: int | None = field(default=None, metadata=_help("consider candidates up to this rank (default: "
                                                               "as sentence-transformers derives it)", int))
    absolute_margin: float | None = field(default=None, metadata=_help(
        "drop candidates scoring above (positive score - margin)", float))
    relative_margin: float | None = field(default=None, metadata=_help(
        "drop candidates scoring above positive score x (1 - margin) (|positive| for negative scores)", float))
    max_score: float | None = field(default=None, metadata=_help("drop candidates scoring above this", float))
    min_score: float | None = field(default=None, metadata=_help("drop candidates scoring below this", float))
    sampling: str = field(default="top", metadata=_help("top: the best-ranked; random: a seeded sample of the "
                                                        "range", choices=("top", "random")))
    seed: int = field(default=0, metadata=_help("seed of random sampling", int))
    cross_encoder: str | None = field(default=None, metadata=_help(
        "a local sentence-transformers CrossEncoder folder: rescore candidates and positives with it; a "
        "candidate must then score below its positive (absolute margin 0 unless a margin is given)"))
    use_faiss: bool = field(default=False, metadata={"help": "retrieve with a faiss flat index (exact scores "
                                                             "still decide)", "action": "store_true"})
    query_chunk_size: int = field(default=1024, metadata=_help("anchors retrieved per chunk (bounds memory; "
                                                               "the unit of resume)", int))
    cache_dir: str | None = field(default=None, metadata=_help("embeddings and candidates (default: "
                                                               "<output>.cache)"))
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output file",
                                                     "action": "store_true"})

    def selection(self) -> Selection:
        margin = self.absolute_margin
        if self.cross_encoder is not None and margin is None and self.relative_margin is None:
            margin = 0.0  # the cross-encoder's job: keep only candidates it scores below the positive
        return Selection(num_negatives=self.num_negatives, range_min=self.range_min, range_max=self.range_max,
                         absolute_margin=margin, relative_margin=self.relative_margin, max_score=self.max_score,
                         min_score=self.min_score, sampling=self.sampling, seed=self.seed)


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    """(anchors, positives): the first two sentence columns of a training file."""
    dataset = load_training_dataset(path)
    sentences = column_roles(dataset).sentences
    if len(sentences) < 2:
        raise SimCSEError(f"`pairs` {path} has one sentence column; mining needs (anchor, positive) pairs")
    return list(dataset[sentences[0]]), list(dataset[sentences[1]])


def read_corpus(path: str) -> list[str]:
    """Every text of a .txt file (one a line) or of a training file's sentence columns, in order."""
    dataset = load_training_dataset(path)
    texts: list[str] = []
    for name in column_roles(dataset).sentences:
        texts.extend(dataset[name])
    return texts


def write_training_file(path: str | Path, mined: Mined, num_negatives: int) -> None:
    """sent0, sent1, hard_neg (or hard_neg_1..k) as CSV, written atomically."""
    negatives = ["hard_neg"] if num_negatives == 1 else [f"hard_neg_{i}" for i in range(1, num_negatives + 1)]
    with atomic_file(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", *negatives])
        for anchor, positive, found in mined.rows:
            writer.writerow([anchor, positive, *found])


def model_embedder(args: MiningArguments, cache: Path):
    """embed(texts, name) through the project's encoder, into memory-mapped arrays under ``cache``."""
    from transformers import AutoConfig

    from simcse.modeling.checkpoint import resolve_pooler
    from simcse.modeling.encoder import build_encoder, load_pretrained

    config = load_pretrained(args.model_name_or_path, AutoConfig.from_pretrained)
    pooler, _ = resolve_pooler(args.model_name_or_path, config, args.pooler)
    encoder = build_encoder(args.model_name_or_path, pooler, device=args.device, batch_size=args.batch_size,
                            max_length=args.max_seq_length)
    fingerprint = {"model": model_digest(args.model_name_or_path), "pooler": pooler}

    def embed(texts, name):
        return embed_texts(texts, encoder.embed, encoder.tokenizer, encoder.device, cache, name, fingerprint,
                           batch_size=args.batch_size, max_length=encoder.max_length)

    return embed, repr(fingerprint), encoder.device


def cross_encoder_scorer(path: str, device, batch_size: int):
    from sentence_transformers import CrossEncoder

    if not Path(path).is_dir():
        raise SimCSEError(f"`cross_encoder` {path!r} is not a folder; give a local CrossEncoder directory")
    model = CrossEncoder(path, device=str(device))
    return lambda pairs: model.predict(pairs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def run(args: MiningArguments) -> dict:
    """Mine, write the training file and its report; return the report."""
    output = Path(args.output)
    if output.suffix.lower() != ".csv":
        raise SimCSEError(f"`output` {args.output} must end in .csv (the training file format written)")
    if output.exists() and not args.overwrite:
        raise SimCSEError(f"`output` {args.output} exists; pass `overwrite` or choose another path")
    anchors, positives = read_pairs(args.pairs)
    corpus = read_corpus(args.corpus) if args.corpus else None
    cache = Path(args.cache_dir) if args.cache_dir else output.with_name(output.name + ".cache")
    embed, tag, device = model_embedder(args, cache)
    scorer = cross_encoder_scorer(args.cross_encoder, device, args.batch_size) if args.cross_encoder else None
    mined = mine_hard_negatives(anchors, positives, embed, args.selection(), corpus=corpus, cross_encoder=scorer,
                                use_faiss=args.use_faiss, query_chunk_size=args.query_chunk_size, cache_dir=cache,
                                cache_tag=tag)
    if not mined.rows:
        raise SimCSEError(f"no pair got {args.num_negatives} negative(s) (see the counts: {mined.report['dropped']});"
                          " loosen the margins or `range_max`, or lower `num_negatives`")
    write_training_file(output, mined, args.num_negatives)
    report = {"pairs_file": args.pairs, "corpus_file": args.corpus, "model": args.model_name_or_path,
              "output": str(output), **mined.report}
    atomic_write_json(output.with_name(output.name + ".json"), report)
    return report


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags (one per :class:`MiningArguments` field), mine, print a summary; return the report."""
    from simcse.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m simcse.mine", description=__doc__.split("\n\n")[0])
    for item in dataclasses.fields(MiningArguments):
        options = dict(item.metadata)
        if item.default is not dataclasses.MISSING:
            options["default"] = item.default
        parser.add_argument(f"--{item.name}", **options)
    report = run(MiningArguments(**vars(parser.parse_args(argv))))
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in report["dropped"].items() if n)
    print(f"wrote {report['rows_written']:,} of {report['pairs']:,} pairs with {report['selection']['num_negatives']} "
          f"negative(s) to {report['output']} ({report['rows_dropped_too_few_negatives']:,} without enough; dropped "
          f"candidates: {dropped or 'none'}; {report['seconds']['total_s']:.1f} s)")
    return report
