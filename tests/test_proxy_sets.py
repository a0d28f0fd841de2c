"""Proxy retrieval sets (simcse/evaluation/proxy_sets.py) on hand-written STS-B, SICK and NLI files with known
answers, once on the real STS-B test split, and the hand-written BEIR fixture tests/fixtures/beir_tiny."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import simcse.evaluation.proxy_sets as proxy_sets
from helpers import REPO, SHARED, require_shared
from simcse.errors import SimCSEError
from simcse.evaluation.beir import read_beir_folder
from simcse.evaluation.proxy_sets import build_proxy_set, main, nli_split_of

FIXTURE = Path(__file__).parent / "fixtures" / "beir_tiny"

# STS-B format: genre, file, year, id, score, sentence 1, sentence 2 (tab-separated, no header).
STSB_ROWS = [
    ("5.000", "A man is playing a guitar.", "A man plays the guitar."),
    ("3.900", "A woman is slicing an onion.", "A woman is cutting an onion."),
    ("4.000", "A dog runs in the park.", "A dog is running through a park."),
    ("4.200", "A cat sits on a mat.", "A cat sits on a mat."),
    ("1.000", " A man plays the guitar. ", "Children are swimming."),  # outer spaces are stripped
    ("4.800", "A man is playing a guitar.", "Someone is playing a guitar."),
]
# SICK format: header, then pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment; CRLF.
SICK_TEST_ROWS = [
    ("A boy is jumping on a trampoline", "A kid is bouncing on a trampoline", "4.6"),
    ("A boy is jumping on a trampoline", "A girl sings a song", "1.2"),
    ("A chef cooks soup", "Soup is being cooked by a chef", "4.0"),
    ("Two men are fighting", "Two men are wrestling", "3.9"),
]
SICK_TRIAL_ROWS = [("A plane is landing", "An aircraft lands", "4.9"), ("A plane is landing", "A man eats", "1.0")]

NLI_ROWS = [
    ("A man is playing a guitar .", "A man plays music .", "A man is sleeping ."),
    ("Two dogs run on the beach .", "Animals are outside .", "Two cats sleep indoors ."),
    ("A man is playing a guitar .", "Someone plays an instrument .", "Nobody is playing anything ."),
    ("A woman reads a book in a park .", "A woman is outdoors .", "A man is sleeping ."),
    ("Children are building a sandcastle .", "Children are building a sandcastle .", "The children are asleep ."),
    ("A chef is cooking pasta .", "Someone is cooking , in a kitchen .", "The chef is swimming ."),
    ("An old man feeds pigeons .", "A man feeds birds .", "A man is sleeping ."),
    ("A girl rides a red bicycle .", "A girl is riding .", "A boy walks ."),
    ("Three people are hiking up a hill .", "People are outdoors .", "People are inside ."),
]


def write_senteval_tree(root: Path, stsb_rows=STSB_ROWS) -> Path:
    """A SentEval data tree holding only STS-B dev/test and the SICK trial/test files."""
    stsb = root / "downstream" / "STS" / "STSBenchmark"
    stsb.mkdir(parents=True)
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(stsb_rows)]
    (stsb / "sts-test.csv").write_text("".join(lines), encoding="utf-8")
    (stsb / "sts-dev.csv").write_text(lines[0], encoding="utf-8")
    sick = root / "downstream" / "SICK"
    sick.mkdir(parents=True)
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n"
    for name, rows in (("SICK_test_annotated.txt", SICK_TEST_ROWS), ("SICK_trial.txt", SICK_TRIAL_ROWS)):
        body = "".join(f"{i}\t{a}\t{b}\t{s}\tNEUTRAL\r\n" for i, (a, b, s) in enumerate(rows, start=1))
        (sick / name).write_bytes((header + body).encode("utf-8"))
    return root


def write_nli(path: Path, rows=NLI_ROWS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        writer.writerows(rows)
    return path


def read_set(folder: Path, split: str) -> tuple[dict, dict, list[tuple[str, str, int]]]:
    """(corpus id -> text, query id -> text, qrels rows) of a BEIR-layout folder, read with plain json/csv."""
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert set(record) == {"_id", "title", "text"} and record["_id"] not in corpus
        corpus[record["_id"]] = record["text"]
    queries = {}
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert set(record) == {"_id", "text"} and record["_id"] not in queries
        queries[record["_id"]] = record["text"]
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    qrels = [(q, d, int(s)) for q, d, s in rows[1:]]
    assert all(q in queries and d in corpus and score >= 0 for q, d, score in qrels)
    return corpus, queries, qrels


def texts_of(corpus: dict, queries: dict, qrels: list) -> list[tuple[str, str, int]]:
    return [(queries[q], corpus[d], score) for q, d, score in qrels]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stsb_known_qrels_dedupe_and_self_pair(tmp_path):
    tree = write_senteval_tree(tmp_path / "data")
    counts = build_proxy_set("stsb", "test", tmp_path / "out", data_dir=tree)
    corpus, queries, qrels = read_set(tmp_path / "out", "test")
    # Rows 1, 3 and 6 qualify (5.0, 4.0 at the boundary, 4.8); 3.9 does not; the 4.2 self pair is skipped.
    assert qrels == [("s1", "s2", 1), ("s1", "s9", 1), ("s5", "s6", 1)]
    assert texts_of(corpus, queries, qrels) == [
        ("A man is playing a guitar.", "A man plays the guitar.", 1),
        ("A man is playing a guitar.", "Someone is playing a guitar.", 1),
        ("A dog runs in the park.", "A dog is running through a park.", 1),
    ]
    # 12 sentences, 9 distinct: the guitar query (rows 1, 6), 'A man plays the guitar.' (rows 1, 5), the cat.
    assert len(corpus) == 9 and list(corpus) == [f"s{i}" for i in range(1, 10)]
    assert list(corpus.values()).count("A man plays the guitar.") == 1
    assert corpus["s7"] == "A cat sits on a mat." and "s7" not in queries
    assert queries == {"s1": "A man is playing a guitar.", "s5": "A dog runs in the park."}
    assert all(corpus[q] == text for q, text in queries.items())  # a query's id is its text's document id
    assert all(q != d for q, d, _ in qrels)
    assert counts == {"source": "stsb", "split": "test", "rows_read": 6, "pairs": 6, "pairs_qualifying": 4,
                      "self_pairs_skipped": 1, "duplicate_pairs": 0, "queries": 2, "documents": 9, "qrels": 3}


def test_stsb_min_score_lowered_admits_the_39_pair(tmp_path):
    tree = write_senteval_tree(tmp_path / "data")
    counts = build_proxy_set("stsb", "test", tmp_path / "out", data_dir=tree, min_score=3.9)
    corpus, queries, qrels = read_set(tmp_path / "out", "test")
    assert ("A woman is slicing an onion.", "A woman is cutting an onion.", 1) in texts_of(corpus, queries, qrels)
    assert counts["qrels"] == 4 and counts["queries"] == 3
    assert "score >= 3.9" in (tmp_path / "out" / "README.txt").read_text(encoding="utf-8")


def test_sickr_splits_crlf_and_boundary(tmp_path):
    tree = write_senteval_tree(tmp_path / "data")
    build_proxy_set("sickr", "test", tmp_path / "test", data_dir=tree)
    corpus, queries, qrels = read_set(tmp_path / "test", "test")
    assert texts_of(corpus, queries, qrels) == [
        ("A boy is jumping on a trampoline", "A kid is bouncing on a trampoline", 1),
        ("A chef cooks soup", "Soup is being cooked by a chef", 1),
    ]
    assert len(corpus) == 7 and not any("\r" in text for text in corpus.values())
    counts = build_proxy_set("sickr", "dev", tmp_path / "dev", data_dir=tree)  # dev is SICK_trial.txt
    corpus, queries, qrels = read_set(tmp_path / "dev", "dev")
    assert texts_of(corpus, queries, qrels) == [("A plane is landing", "An aircraft lands", 1)]
    assert counts["documents"] == 3 and counts["rows_read"] == 2


def test_default_data_dir_resolves_like_evaluation(tmp_path, monkeypatch):
    tree = write_senteval_tree(tmp_path / "data")
    monkeypatch.setenv("SENTEVAL_DATA", str(tree))
    build_proxy_set("stsb", "test", tmp_path / "a")
    build_proxy_set("stsb", "test", tmp_path / "b", data_dir=tree / "downstream")
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    monkeypatch.setenv("SENTEVAL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SimCSEError, match="no downstream/ folder"):
        build_proxy_set("stsb", "test", tmp_path / "c")


def test_rebuild_is_byte_identical_and_readme_says_proxy(tmp_path, monkeypatch):
    tree = write_senteval_tree(tmp_path / "data")
    written: list[str] = []
    record = lambda path, text: (written.append(Path(path).name), write(path, text))  # noqa: E731
    write = proxy_sets.atomic_write_text
    monkeypatch.setattr(proxy_sets, "atomic_write_text", record)
    build_proxy_set("stsb", "test", tmp_path / "one", data_dir=tree)
    assert written == ["corpus.jsonl", "queries.jsonl", "test.tsv", "dataset.json", "README.txt"]  # atomic, README last
    build_proxy_set("stsb", "test", tmp_path / "two", data_dir=tree)
    first = snapshot(tmp_path / "one")
    assert sorted(first) == ["README.txt", "corpus.jsonl", "dataset.json", "qrels/test.tsv", "queries.jsonl"]
    assert first == snapshot(tmp_path / "two")
    build_proxy_set("stsb", "test", tmp_path / "one", data_dir=tree, overwrite=True)
    assert snapshot(tmp_path / "one") == first
    assert first["dataset.json"] == b'{"ignore_identical_ids": true}\n'
    assert read_beir_folder(tmp_path / "one").ignore_identical_ids is True  # the folder declares the rule
    readme = first["README.txt"].decode("utf-8")
    assert "proxy built from STS Benchmark test, not a BEIR dataset" in readme
    assert "sts-test.csv" in readme and "self_pairs_skipped: 1" in readme and "qrels: 3" in readme
    assert 'dataset.json declares it ({"ignore_identical_ids": true})' in readme


def test_refuses_non_empty_folder_and_deletes_nothing(tmp_path):
    tree = write_senteval_tree(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "dataset.json").write_text('{"ignore_identical_ids": false}', encoding="utf-8")
    with pytest.raises(SimCSEError, match="`overwrite`") as info:
        build_proxy_set("stsb", "test", out, data_dir=tree)
    assert str(out) in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "notes.txt"]
    assert (out / "dataset.json").read_text(encoding="utf-8") == '{"ignore_identical_ids": false}'
    build_proxy_set("stsb", "test", out, data_dir=tree, overwrite=True)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / "dataset.json").read_text(encoding="utf-8") == '{"ignore_identical_ids": true}\n'  # replaced
    # A dev build over a test build would leave qrels/test.tsv pointing into the wrong corpus: refused.
    with pytest.raises(SimCSEError, match="qrels/test.tsv"):
        build_proxy_set("stsb", "dev", out, data_dir=tree, overwrite=True)
    assert (out / "qrels" / "test.tsv").is_file() and not (out / "qrels" / "dev.tsv").exists()
    with pytest.raises(SimCSEError, match="is a file"):
        build_proxy_set("stsb", "test", out / "notes.txt", data_dir=tree)


def test_bad_input_names_file_and_line(tmp_path):
    rows = [*STSB_ROWS[:2], ("n/a", "A bad row.", "Its score is missing."), *STSB_ROWS[2:]]
    tree = write_senteval_tree(tmp_path / "data", stsb_rows=rows)
    with pytest.raises(SimCSEError, match=r"sts-test\.csv, line 3: the score field holds 'n/a'"):
        build_proxy_set("stsb", "test", tmp_path / "out", data_dir=tree)
    assert not (tmp_path / "out").exists()
    (tree / "downstream" / "SICK" / "SICK_trial.txt").unlink()
    with pytest.raises(SimCSEError, match=r"SICK_trial\.txt does not exist"):
        build_proxy_set("sickr", "dev", tmp_path / "out", data_dir=tree)
    bad_nli = tmp_path / "bad.csv"
    bad_nli.write_text("sent0,sent1,hard_neg\na,b,c\nonly one field\n", encoding="utf-8")
    with pytest.raises(SimCSEError, match=r"bad\.csv, line 3: 1 fields"):
        build_proxy_set("nli", "test", tmp_path / "out", input_path=bad_nli)
    bad_nli.write_text("premise,hypothesis\na,b\n", encoding="utf-8")
    with pytest.raises(SimCSEError, match=r"bad\.csv, line 1: the header"):
        build_proxy_set("nli", "test", tmp_path / "out", input_path=bad_nli)
    with pytest.raises(SimCSEError, match="`input`"):
        build_proxy_set("nli", "test", tmp_path / "out", input_path=tmp_path / "missing.csv")


def test_nli_split_rule_is_fixed():
    """The published split: a change of the hash rule moves these premises and fails here."""
    assert [nli_split_of(row[0]) for row in NLI_ROWS] == [
        "test", "dev", "test", "test", "test", "dev", "dev", "dev", "dev"]


def test_nli_known_qrels_split_and_ids(tmp_path):
    source = write_nli(tmp_path / "nli.csv")
    counts = build_proxy_set("nli", "test", tmp_path / "test", input_path=source)
    corpus, queries, qrels = read_set(tmp_path / "test", "test")
    assert texts_of(corpus, queries, qrels) == [
        ("A man is playing a guitar .", "A man plays music .", 1),
        ("A man is playing a guitar .", "Someone plays an instrument .", 1),
        ("A woman reads a book in a park .", "A woman is outdoors .", 1),
    ]
    assert "A man is sleeping ." in corpus.values() and "The children are asleep ." in corpus.values()
    assert counts == {"source": "nli", "split": "test", "rows_read": 9, "pairs": 4, "pairs_qualifying": 4,
                      "self_pairs_skipped": 1, "duplicate_pairs": 0, "queries": 2, "documents": 9, "qrels": 3}
    dev = build_proxy_set("nli", "dev", tmp_path / "dev", input_path=source)
    dev_corpus, dev_queries, dev_qrels = read_set(tmp_path / "dev", "dev")
    assert dev["queries"] == 5 and dev["qrels"] == 5 and dev["documents"] == 15
    assert not set(queries.values()) & set(dev_queries.values())  # each premise is in one split only
    assert ("A chef is cooking pasta .", "Someone is cooking , in a kitchen .", 1) in texts_of(
        dev_corpus, dev_queries, dev_qrels)
    build_proxy_set("nli", "dev", tmp_path / "again", input_path=source)
    assert snapshot(tmp_path / "again") == snapshot(tmp_path / "dev")
    assert "SHA-256(premise, UTF-8)" in (tmp_path / "dev" / "README.txt").read_text(encoding="utf-8")


def test_cli_flags_and_one_line_errors(tmp_path, capsys):
    from simcse.cli import run_cli

    tree = write_senteval_tree(tmp_path / "data")
    counts = main(["--source", "stsb", "--split", "test", "--output", str(tmp_path / "out"),
                   "--senteval_data", str(tree), "--min_score", "3.9"])
    assert counts["qrels"] == 4
    assert "proxy built from STS Benchmark test, not a BEIR dataset: 3 queries" in capsys.readouterr().out
    prog = "python -m simcse.evaluation.proxy_sets"
    for argv, message in [
        (["--source", "nli", "--split", "dev", "--output", str(tmp_path / "n")], "--source nli needs --input"),
        (["--source", "stsb", "--split", "dev", "--output", str(tmp_path / "out"), "--senteval_data", str(tree)],
         "pass --overwrite"),
        (["--source", "nli", "--split", "dev", "--output", str(tmp_path / "n"), "--input", "x.csv",
          "--min_score", "3"], "--min_score applies to --source stsb/sickr"),
        (["--source", "stsb", "--split", "dev", "--output", str(tmp_path / "n"), "--input", "x.csv"],
         "--input applies to --source nli"),
    ]:
        assert run_cli(main, argv, prog=prog) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "n").exists()


def test_module_entry_point_runs(tmp_path):
    source = write_nli(tmp_path / "nli.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "simcse.evaluation.proxy_sets", "--source", "nli", "--split", "test",
               "--output", str(tmp_path / "out"), "--input", str(source)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "not a BEIR dataset: 2 queries, 9 documents, 3 qrels (1 self pairs skipped)" in done.stdout
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--overwrite" in done.stderr and "Traceback" not in done.stderr


def test_real_stsb_test(tmp_path):
    require_shared(SHARED / "data" / "downstream" / "STS" / "STSBenchmark" / "sts-test.csv", "STS-B test split")
    counts = build_proxy_set("stsb", "test", tmp_path / "out", data_dir=SHARED / "data")
    print(counts)
    corpus, queries, qrels = read_set(tmp_path / "out", "test")
    assert counts["rows_read"] == 1379 and counts["pairs_qualifying"] == 338
    assert (counts["queries"], counts["documents"], counts["qrels"]) == (len(queries), len(corpus), len(qrels))
    assert 250 <= len(queries) <= 338 and 2400 <= len(corpus) <= 2 * 1379 and len(qrels) == 338
    assert read_beir_folder(tmp_path / "out").ignore_identical_ids is True
    assert all(q != d for q, d, _ in qrels)


def test_beir_tiny_fixture_is_consistent():
    test_corpus = {}
    for line in (FIXTURE / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert set(record) == {"_id", "title", "text"} and record["text"].strip()
        test_corpus[record["_id"]] = record
    assert 10 <= len(test_corpus) <= 14
    assert 0 < sum(bool(r["title"]) for r in test_corpus.values()) < len(test_corpus)  # titles on a few
    splits = {split: read_set(FIXTURE, split) for split in ("test", "dev")}
    corpus, queries, test_qrels = splits["test"]
    assert 4 <= len(queries) <= 5 and set(corpus) == set(test_corpus)
    dev_qrels = splits["dev"][2]
    assert {score for _, _, score in test_qrels} == {0, 1, 2}  # graded, with judged non-relevant documents
    dev_only = {q for q, _, _ in dev_qrels} - {q for q, _, _ in test_qrels}
    assert len(dev_only) == 1
    assert {q for q, _, _ in test_qrels} | dev_only == set(queries)  # every query is judged somewhere
    for qrels in (test_qrels, dev_qrels):
        assert len({(q, d) for q, d, _ in qrels}) == len(qrels)
        assert all(any(s > 0 for q2, _, s in qrels if q2 == q) for q, _, _ in qrels)  # each has a relevant doc
