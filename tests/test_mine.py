"""Hard-negative mining (simcse.mine): the selection rules on known answers, parity with sentence-transformers'
mine_hard_negatives on the same model and data (range, margins, score bounds, several positives per anchor,
a cross-encoder), the command writing a file train.py trains on, and resume / reuse of the cached stages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from helpers import REPO, require_module, require_shared, save_tiny_model
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.mine import Selection, mine_hard_negatives
from simcse.mine import embeddings as mine_embeddings
from simcse.mine import mining as mine_module
from simcse.mine.run import main
from simcse.mine.select import Counts, select

NLI = REPO.parent / "shared" / "data" / "train" / "nli_snli_devtest_for_simcse.csv"
MINILM = REPO.parent / "shared" / "models" / "paraphrase-MiniLM-L3-v2"


def nli_rows(n: int) -> list[list[str]]:
    with open(require_shared(NLI, "the NLI sample"), encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return rows[:n]


# ----- the selection rules, on known answers ------------------------------------------------------------

def test_select_excludes_anchor_and_positives_then_takes_the_range():
    ids = np.array([7, 3, 5, 9, 2, -1])
    scores = np.array([0.95, 0.9, 0.8, 0.8, 0.5, -np.inf])
    counts = Counts()
    rule = Selection(num_negatives=2, range_min=1)
    chosen, chosen_scores = select(ids, scores, anchor_id=7, positive_ids=np.array([3]),
                                   positive_scores=np.array([0.9]), rule=rule, range_max=10, counts=counts)
    # left after exclusions: 5 (0.8), 9 (0.8), 2 (0.5); the tie ordered by id; range_min skips 5
    assert chosen.tolist() == [9, 2] and chosen_scores.tolist() == [0.8, 0.5]
    assert counts.dropped["anchor_text"] == 1 and counts.dropped["positive"] == 1 and counts.candidates == 5
    assert counts.skipped_by_range_min == 1 and counts.kept == 2


@pytest.mark.parametrize("rule, expected", [
    (Selection(num_negatives=3, absolute_margin=0.1), [9]),  # above 0.6 - 0.1 = 0.5 dropped
    (Selection(num_negatives=3, relative_margin=0.1), [9, 2]),  # above 0.6 - 0.06 = 0.54 dropped
    (Selection(num_negatives=3, max_score=0.5), [9]),
    (Selection(num_negatives=3, min_score=0.5), [5, 2]),
])
def test_margins_and_score_bounds(rule, expected):
    ids, scores = np.array([5, 9, 2]), np.array([0.7, 0.45, 0.52])
    chosen, _ = select(ids, scores, -1, np.array([1]), np.array([0.6]), rule, 10, Counts())
    assert sorted(chosen.tolist()) == sorted(expected)


def test_relative_margin_uses_the_magnitude_of_a_negative_positive_score():
    ids, scores = np.array([5, 9]), np.array([-0.25, -0.35])
    chosen, _ = select(ids, scores, -1, np.array([1]), np.array([-0.2]), Selection(relative_margin=0.5), 10, Counts())
    assert chosen.tolist() == [9]  # threshold -0.2 - 0.1 = -0.3


def test_bad_selections_name_the_setting():
    for rule, match in [(Selection(num_negatives=0), "`num_negatives`"), (Selection(range_min=-1), "`range_min`"),
                        (Selection(range_min=5, range_max=5), "`range_min` 5 must be below `range_max` 5"),
                        (Selection(num_negatives=4, range_min=2, range_max=5), "lower `num_negatives`")]:
        with pytest.raises(SimCSEError, match=match):
            rule.check()


# ----- parity with sentence-transformers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def st_model():
    st = require_module("sentence_transformers")
    return st.SentenceTransformer(str(require_shared(MINILM, "paraphrase-MiniLM-L3-v2")), device="cpu")


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    st = require_module("sentence_transformers")
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = save_tiny_model(tmp_path_factory.mktemp("ce") / "base", "bert")
    config = AutoConfig.from_pretrained(base, num_labels=1)
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # a random head scores everything ~0.498; spread the scores so ranks are not ties
        model.classifier.weight.mul_(2000.0)
    model.save_pretrained(base.parent / "ce")
    AutoTokenizer.from_pretrained(base).save_pretrained(base.parent / "ce")
    return st.CrossEncoder(str(base.parent / "ce"), device="cpu")


def parity_data(n: int = 160) -> tuple[list[str], list[str], list[str]]:
    rows = nli_rows(n)
    anchors, positives = [r[0] for r in rows], [r[1] for r in rows]
    for i in range(0, 40, 4):  # some anchors with two positives, as in the peer's multi-positive case
        anchors[i + 1] = anchors[i]
    return anchors, positives, [r[2] for r in rows]


PARITY = {
    "defaults": {"num_negatives": 3},
    "range": {"num_negatives": 2, "range_min": 3, "range_max": 15},
    "absolute_margin": {"num_negatives": 2, "absolute_margin": 0.05},
    "relative_margin+max_score": {"num_negatives": 1, "relative_margin": 0.1, "max_score": 0.8},
    "min_score": {"num_negatives": 3, "min_score": 0.3, "range_max": 30},
}


def peer_negatives(st_model, anchors, positives, corpus, **settings) -> dict:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as peer

    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    mined = peer(dataset, st_model, corpus=corpus, output_format="n-tuple", batch_size=32, verbose=False, **settings)
    negatives = sorted(c for c in mined.column_names if c.startswith("negative_"))
    return {(row["anchor"], row["positive"]): [row[c] for c in negatives] for row in mined}


def our_negatives(st_model, anchors, positives, corpus, cross_encoder=None, **settings) -> dict:
    def embed(texts, name):  # the same model and batches as the peer: only the mining differs
        return st_model.encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    scorer = None if cross_encoder is None else (
        lambda pairs: cross_encoder.predict(pairs, batch_size=32, convert_to_numpy=True, show_progress_bar=False))
    mined = mine_hard_negatives(anchors, positives, embed, Selection(**settings), corpus=corpus,
                                cross_encoder=scorer, log=lambda _: None)
    return {(a, p): negatives for a, p, negatives in mined.rows}


@pytest.mark.parametrize("name", list(PARITY))
def test_negatives_equal_sentence_transformers(st_model, name):
    anchors, positives, corpus = parity_data()
    ours = our_negatives(st_model, anchors, positives, corpus, **PARITY[name])
    theirs = peer_negatives(st_model, anchors, positives, corpus, **PARITY[name])
    assert len(theirs) > 20
    assert ours == theirs


def test_cross_encoder_rescoring_equals_sentence_transformers(st_model, cross_encoder):
    anchors, positives, corpus = parity_data(60)
    settings = {"num_negatives": 2, "absolute_margin": 0.0, "range_max": 12}
    ours = our_negatives(st_model, anchors, positives, corpus, cross_encoder=cross_encoder, **settings)
    theirs = peer_negatives(st_model, anchors, positives, corpus, cross_encoder=cross_encoder, **settings)
    assert len(theirs) > 5 and ours == theirs


# ----- the command, and the file train.py trains on ----------------------------------------------------

def write_pairs(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1"])
        writer.writerows([r[:2] for r in rows])
    return path


def test_the_command_writes_a_training_file_train_py_trains_on(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.csv", nli_rows(64))
    out = tmp_path / "mined.csv"
    report = main(["--pairs", str(pairs), "--model_name_or_path", str(require_shared(MINILM, "MiniLM-L3")),
                   "--pooler", "avg", "--output", str(out), "--num_negatives", "2", "--range_min", "1"])
    assert "wrote 64 of 64 pairs with 2 negative(s)" in capsys.readouterr().out
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["sent0", "sent1", "hard_neg_1", "hard_neg_2"] and len(rows) == 65
    for anchor, positive, *negatives in rows[1:]:
        assert anchor not in negatives and positive not in negatives and len(set(negatives)) == 2
    saved = json.loads((tmp_path / "mined.csv.json").read_text())
    assert saved["rows_written"] == 64 == report["rows_written"] and saved["skipped_by_range_min"] == 64
    metrics = train.main(["--model_name_or_path", str(MINILM), "--train_file", str(out), "--output_dir",
                          str(tmp_path / "run"), "--pooler_type", "avg", "--per_device_train_batch_size", "8",
                          "--max_steps", "2", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
                          "--save_strategy", "no", "--eval_strategy", "no"])
    assert np.isfinite(metrics["train_loss"])
    code = run_cli(main, ["--pairs", str(pairs), "--model_name_or_path", str(MINILM), "--pooler", "avg",
                          "--output", str(out)], prog="python -m simcse.mine")
    assert code == 2 and "--output" in capsys.readouterr().err and out.stat().st_size > 0  # not overwritten


# ----- scale: embeddings computed once, resumed after a kill; candidates resumed by chunk ---------------

class Killed(Exception):
    pass


def test_embeddings_resume_after_a_kill_and_are_reused(tmp_path, monkeypatch, st_model):
    texts = [r[0] for r in nli_rows(300)] + [r[1] for r in nli_rows(300)]
    texts = list(dict.fromkeys(texts))
    tokenizer = st_model.tokenizer
    model = st_model[0].auto_model

    calls = {"n": 0, "kill_at": None}

    def embed(ids, mask):
        calls["n"] += 1
        if calls["kill_at"] is not None and calls["n"] == calls["kill_at"]:
            raise Killed
        states = model(input_ids=ids, attention_mask=mask).last_hidden_state
        return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    monkeypatch.setattr(mine_embeddings, "FLUSH_EVERY", 2)
    whole = mine_embeddings.embed_texts(texts, embed, tokenizer, "cpu", tmp_path / "a", "corpus", {"m": 1},
                                        batch_size=32, log=lambda _: None)
    whole = np.array(whole)
    calls.update(n=0, kill_at=8)  # dies inside batch 8: batches 1-6 were recorded (every 2), 7 was not
    with pytest.raises(Killed):
        mine_embeddings.embed_texts(texts, embed, tokenizer, "cpu", tmp_path / "b", "corpus", {"m": 1},
                                    batch_size=32, log=lambda _: None)
    assert json.loads((tmp_path / "b" / "corpus.json").read_text())["batches_done"] == 6
    calls.update(n=0, kill_at=None)
    resumed = mine_embeddings.embed_texts(texts, embed, tokenizer, "cpu", tmp_path / "b", "corpus", {"m": 1},
                                          batch_size=32, log=lambda _: None)
    batches = -(-len(texts) // 32)
    assert calls["n"] == batches - 6  # only the batches not recorded
    np.testing.assert_allclose(np.array(resumed), whole, atol=1e-6)
    calls["n"] = 0
    mine_embeddings.embed_texts(texts, embed, tokenizer, "cpu", tmp_path / "b", "corpus", {"m": 1},
                                batch_size=32, log=lambda _: None)
    assert calls["n"] == 0  # reused
    mine_embeddings.embed_texts(texts, embed, tokenizer, "cpu", tmp_path / "b", "corpus", {"m": 2},
                                batch_size=32, log=lambda _: None)
    assert calls["n"] == batches  # another model: computed again


def test_retrieval_resumes_by_chunk(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    corpus = [f"text {i}" for i in range(300)]
    vectors = {t: rng.normal(size=16).astype(np.float32) for t in corpus}
    anchors = [f"anchor {i}" for i in range(50)]
    vectors.update({a: rng.normal(size=16).astype(np.float32) for a in anchors})
    positives = corpus[:50]

    def embed(texts, name):
        return np.stack([vectors[t] for t in texts])

    scans = {"n": 0}
    real_scan = mine_module.scan_candidates

    def counting_scan(*args, **kwargs):
        scans["n"] += 1
        if scans.get("kill_at") == scans["n"]:
            raise Killed
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(mine_module, "scan_candidates", counting_scan)
    run = lambda cache: mine_hard_negatives(anchors, positives, embed, Selection(num_negatives=2), corpus=corpus,  # noqa: E731
                                            query_chunk_size=8, cache_dir=cache, log=lambda _: None)
    whole = run(None)
    assert scans["n"] == 7  # 50 anchors, 8 a chunk
    scans.update(n=0, kill_at=4)
    with pytest.raises(Killed):
        run(tmp_path)
    scans.update(n=0, kill_at=None)
    resumed = run(tmp_path)
    assert scans["n"] == 4 and resumed.rows == whole.rows  # chunks 1-3 read back
