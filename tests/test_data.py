"""Training data: file formats and the column rule, tokenization shapes, padding and BERT masking."""

from __future__ import annotations

import functools
import json
import re

import datasets
import pyarrow as pa
import pytest
import torch
from transformers import AutoTokenizer

from helpers import SHARED, require_shared, tokenizer_path
from simcse.data import (
    SUPPORTED_EXTENSIONS,
    ColumnRoles,
    SimCSECollator,
    TrainingExamples,
    load_training_dataset,
    mask_tokens,
    pad_sentence_features,
    tokenize_dataset,
)
from simcse.errors import SimCSEError


@pytest.fixture
def load(tmp_path):
    """Write `content` to a file named `name` and load it with a per-test cache."""

    def _load(name: str, content: str | bytes) -> datasets.Dataset:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return load_training_dataset(path, cache_dir=tmp_path / "cache")

    return _load


@functools.cache
def _tokenizer(name: str):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(name))
    if tokenizer.pad_token is None:  # GPT-2: what every decoder caller does first
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ----- loading: formats -----------------------------------------------------------------------------


def test_txt_keeps_lines_but_drops_blank_ones(load):
    ds = load("wiki.txt", "first sentence\n  indented, kept as is \r\n\n   \nlast without newline")
    assert ds.column_names == ["text"]
    assert ds["text"] == ["first sentence", "  indented, kept as is ", "last without newline"]


def test_txt_does_not_split_on_unicode_line_separators(load):
    ds = load("wiki.txt", "a\u2028b\x0cc\nd\n")
    assert ds["text"] == ["a\u2028b\x0cc", "d"]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("sent0\nhello\n", {"sent0": ["hello"]}),
        ("sent0,sent1\n\"a, quoted\",b\n\nc,NA\n", {"sent0": ["a, quoted", "c"], "sent1": ["b", "NA"]}),
        ("sent0,sent1,hard_neg\r\na,b,c\r\nd,,f\r\n",
         {"sent0": ["a", "d"], "sent1": ["b", " "], "hard_neg": ["c", "f"]}),
        ("\ufeffs0,s1\n1,2\n", {"s0": ["1"], "s1": ["2"]}),  # BOM dropped; numbers stay text
    ],
    ids=["1-column", "2-columns", "3-columns-crlf-empty-cell", "bom"],
)
def test_csv_columns(load, content, expected):
    ds = load("train.csv", content)
    assert ds.column_names == list(expected)
    assert ds[:] == expected


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("t.json", json.dumps([{"sent0": "a"}, {"sent0": "b"}]), {"sent0": ["a", "b"]}),
        (
            "t.json",
            json.dumps([{"s0": "a", "s1": None}, {"s0": "c"}, {"s1": "d", "s0": ""}]),
            {"s0": ["a", "c", " "], "s1": [" ", " ", "d"]},
        ),
        (
            "t.jsonl",
            '{"a": "1", "b": "2", "c": "3"}\n\n{"a": "4", "b": "5", "c": null}\n',
            {"a": ["1", "4"], "b": ["2", "5"], "c": ["3", " "]},
        ),
        ("t.json", '{"a": "x", "b": "y"}\n{"a": "z", "b": "w"}\n', {"a": ["x", "z"], "b": ["y", "w"]}),
        ("t.json", '{"a": "only one"}', {"a": ["only one"]}),
    ],
    ids=["array-1-column", "array-2-columns-null-missing-empty", "jsonl-3-columns", "json-lines-in-json", "single"],
)
def test_json_records(load, name, content, expected):
    ds = load(name, content)
    assert ds.column_names == list(expected)
    assert ds[:] == expected


def test_real_shared_training_files(tmp_path):
    wiki = SHARED / "data" / "train" / "wiki1m_for_simcse.head11913.txt"
    nli = SHARED / "data" / "train" / "nli_snli_devtest_for_simcse.csv"
    require_shared(wiki, "the wiki1m training sample")
    require_shared(nli, "the NLI training sample")
    ds = load_training_dataset(wiki, cache_dir=tmp_path)
    assert len(ds) == 11913 and ds.column_names == ["text"]
    assert ds[0]["text"] == "YMCA in South Australia"
    ds = load_training_dataset(nli, cache_dir=tmp_path)
    assert ds.column_names == ["sent0", "sent1", "hard_neg"]
    assert ds[0] == {
        "sent0": "Two women are embracing while holding to go packages .",
        "sent1": "Two woman are holding packages .",
        "hard_neg": "The men are fighting outside a deli .",
    }


def test_edited_file_is_not_served_from_the_cache(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("old\n", encoding="utf-8")
    assert load_training_dataset(path, cache_dir=tmp_path / "cache")["text"] == ["old"]
    path.write_text("new\nlines\n", encoding="utf-8")
    assert load_training_dataset(path, cache_dir=tmp_path / "cache")["text"] == ["new", "lines"]


# ----- loading: errors ------------------------------------------------------------------------------


def test_four_columns_name_the_columns_and_the_rule(load):
    with pytest.raises(SimCSEError) as info:
        load("nli.csv", "sent0,sent1,hard_neg,label\na,b,c,d\n")
    message = str(info.value)
    assert "has 4 columns ('sent0', 'sent1', 'hard_neg', 'label')" in message
    assert "1 = unsupervised" in message and "3 = (anchor, positive, hard negative)" in message


def test_zero_columns(load):
    with pytest.raises(SimCSEError, match="records without any text fields"):
        load("t.json", "[{}, {}]")


@pytest.mark.parametrize("content", ["", "   \n\t\n", b"\n\n"])
@pytest.mark.parametrize("name", ["train.txt", "train.csv", "train.json"])
def test_empty_or_whitespace_file(load, name, content):
    with pytest.raises(SimCSEError, match=rf"training file \S*{name} is empty or holds only whitespace"):
        load(name, content)


def test_non_utf8_names_the_line(load):
    with pytest.raises(SimCSEError, match=r"train.txt is not UTF-8: line 2, byte 1 is 0xff"):
        load("train.txt", b"ok\n\xff\xfe bad\n")
    with pytest.raises(SimCSEError, match=r"is not UTF-8: line 3, byte 4 is 0xe9"):
        load("train.csv", b"s0,s1\nab,cd\n" + "caf\u00e9,x\n".encode("latin-1"))


def test_unknown_extension_lists_supported(load):
    with pytest.raises(SimCSEError) as info:
        load("train.tsv", "a\tb\n")
    assert "unsupported extension '.tsv'" in str(info.value)
    assert all(ext in str(info.value) for ext in SUPPORTED_EXTENSIONS)


def test_missing_file(tmp_path):
    with pytest.raises(SimCSEError, match="does not exist.*`train_file`"):
        load_training_dataset(tmp_path / "nope.txt")


def test_json_fields_must_be_text(load):
    with pytest.raises(SimCSEError, match=r"t.json, line 1 \(record 2\): field 'label' holds int 1, not text"):
        load("t.json", json.dumps([{"s0": "a", "label": None}, {"s0": "b", "label": 1}]))
    with pytest.raises(SimCSEError, match=r"t.json, line 1: field 'data' holds list"):
        load("t.json", json.dumps({"data": [{"s0": "a"}]}))
    with pytest.raises(SimCSEError, match=r"line 1 \(record 1\): expected an object.*got str \"a sentence\""):
        load("t.json", json.dumps(["a sentence"]))
    with pytest.raises(SimCSEError, match=r"line 2: not valid JSON"):
        load("t.jsonl", '{"a": "x"}\n{"a": \n')


def test_csv_row_errors_name_the_line(load):
    with pytest.raises(SimCSEError, match=r"line 3: 3 cells but the header has 2"):
        load("t.csv", "s0,s1\na,b\na,b,c\n")
    with pytest.raises(SimCSEError, match=r"header's column 2 has no name"):
        load("t.csv", "s0,,s2\na,b,c\n")
    with pytest.raises(SimCSEError, match=r"repeats the column name\(s\) \['s0'\]"):
        load("t.csv", "s0,s0\na,b\n")
    with pytest.raises(SimCSEError, match=r"has a header \('s0', 's1'\) but no rows"):
        load("t.csv", "s0,s1\n")


# ----- tokenization ---------------------------------------------------------------------------------

SENTENCES = ["A man is playing a guitar.", "Two dogs run through a very, very long field of tall grass.", " "]


@pytest.mark.parametrize("name", ["bert-base-uncased", "roberta-base", "gpt2"])
@pytest.mark.parametrize("num_columns", [1, 2, 3])
def test_tokenize_stores_each_sentence_once(name, num_columns):
    tokenizer = _tokenizer(name)
    columns = {f"c{k}": SENTENCES[k:] + SENTENCES[:k] for k in range(num_columns)}
    ds = tokenize_dataset(datasets.Dataset.from_dict(columns), tokenizer, max_seq_length=8)

    assert isinstance(ds, TrainingExamples) and len(ds) == len(SENTENCES)
    assert ds.dataset.column_names == ["input_ids"] and ds.num_sent == num_columns  # 1 column: stored once
    expected = [[tokenizer(columns[f"c{k}"][row], max_length=8, truncation=True)["input_ids"]
                 for k in range(num_columns)] for row in range(len(SENTENCES))]
    assert [example["input_ids"] for example in ds] == expected
    stored = ds.dataset.data.column("input_ids").combine_chunks().flatten().flatten()
    assert len(stored) == sum(len(ids) for row in expected for ids in row) and stored.type == pa.int32()
    assert max(len(ids) for row in expected for ids in row) == 8  # the long sentence is truncated

    batch = SimCSECollator(tokenizer)(ds.__getitems__([2, 0, 1]))  # what a DataLoader hands the collator
    num_sent = 2 if num_columns == 1 else num_columns
    assert batch["input_ids"].shape[:2] == (3, num_sent)
    has_types = "token_type_ids" in tokenizer.model_input_names
    assert set(batch) == {"input_ids", "attention_mask"} | ({"token_type_ids"} if has_types else set())
    for b, row in enumerate([2, 0, 1]):
        for s in range(num_sent):
            ids = expected[row][0 if num_columns == 1 else s]
            assert batch["input_ids"][b, s, : len(ids)].tolist() == ids
            assert batch["attention_mask"][b, s].sum() == len(ids)
    if has_types:
        assert not batch["token_type_ids"].any()  # what the tokenizer gives a single sentence


def test_fetched_batches_collate_like_example_dicts(tmp_path):
    """The DataLoader path (flat arrays from Arrow) and the list-of-dicts path give the same tensors."""
    path = tmp_path / "nli.csv"
    path.write_text("s0,s1,neg\nA cat sat.,A cat is sitting on a mat.,Dogs bark.\nHi,,Bye now\nx,y,z\n",
                    encoding="utf-8")
    tokenizer = _tokenizer("bert-base-uncased")
    ds = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer)
    collator = SimCSECollator(tokenizer, pad_to_multiple_of=4)
    fast, slow = collator(ds.__getitems__([1, 2, 0])), collator([ds[1], ds[2], ds[0]])
    assert set(fast) == set(slow) and all(torch.equal(fast[key], slow[key]) for key in fast)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collator)
    assert torch.equal(next(iter(loader))["input_ids"], collator([ds[0], ds[1], ds[2]])["input_ids"])


def test_second_preparation_hits_both_caches(tmp_path, monkeypatch):
    """The second run on the same file neither parses it nor tokenizes it: it memory-maps both results."""
    import simcse.data.reading as reading
    import simcse.data.tokenizing as tokenizing

    path = tmp_path / "wiki.txt"
    path.write_text("".join(f"sentence number {i}\n" for i in range(50)), encoding="utf-8")
    tokenizer = _tokenizer("bert-base-uncased")
    calls = {"parse": 0, "tokenize": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(reading, "_parse", counted("parse", reading._parse))
    monkeypatch.setattr(tokenizing, "_tokenize_batch", counted("tokenize", tokenizing._tokenize_batch))
    first = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer, max_seq_length=8)
    assert calls == {"parse": 1, "tokenize": 1}
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.arrow"))
    assert len(cached) == 2 and cached[0].startswith("text-") and cached[1].startswith("tokens-")

    tokenizer("warm up: calling a tokenizer changes its truncation state, which must not change the key",
              max_length=4, truncation=True)
    second = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer, max_seq_length=8)
    assert calls == {"parse": 1, "tokenize": 1}  # nothing recomputed
    assert list(second) == list(first)
    assert second.dataset.cache_files[0]["filename"] == first.dataset.cache_files[0]["filename"]

    tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer, max_seq_length=6)
    tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), _tokenizer("roberta-base"),
                     max_seq_length=8)
    tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer, max_seq_length=8,
                     overwrite_cache=True)
    assert calls == {"parse": 1, "tokenize": 4}  # another length, another tokenizer, or asked: tokenized again


def test_tokenize_in_several_processes_gives_the_same_examples(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text("a,b\n" + "".join(f"first {i},second {i % 7}\n" for i in range(40)), encoding="utf-8")
    tokenizer = _tokenizer("roberta-base")
    one = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "c1"), tokenizer)
    two = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "c2"), tokenizer, num_proc=2, batch_size=8)
    assert list(one) == list(two)


def test_collator_pads_to_max_length_and_empty_text_becomes_a_space():
    tokenizer = _tokenizer("gpt2")
    ds = tokenize_dataset(datasets.Dataset.from_dict({"a": ["hi", ""], "b": [None, "there"]}), tokenizer,
                          max_seq_length=6)
    space = tokenizer(" ")["input_ids"]
    assert ds[1]["input_ids"][0] == space and ds[0]["input_ids"][1] == space  # "" and None: " ", not zero tokens
    batch = SimCSECollator(tokenizer, pad_to_length=6)(ds.__getitems__([0, 1]))
    assert batch["input_ids"].shape == (2, 2, 6)
    hi = tokenizer("hi")["input_ids"]
    assert batch["attention_mask"][0, 0].tolist() == [1] * len(hi) + [0] * (6 - len(hi))


def test_tokenize_errors():
    tokenizer = _tokenizer("bert-base-uncased")
    with pytest.raises(SimCSEError, match=r"has 4 columns \('a', 'b', 'c', 'd'\)"):
        tokenize_dataset(datasets.Dataset.from_dict({k: ["x"] for k in "abcd"}), tokenizer)
    with pytest.raises(SimCSEError, match="max_seq_length must be a positive integer, got 0"):
        tokenize_dataset(datasets.Dataset.from_dict({"a": ["x"]}), tokenizer, max_seq_length=0)


# ----- collation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_sent", [2, 3])
def test_collator_pads_right_to_the_longest(num_sent):
    tokenizer = _tokenizer("bert-base-uncased")
    features = [
        {
            "input_ids": [[101] + [2000 + b] * (b + s) + [102] for s in range(num_sent)],
            "attention_mask": [[1] * (b + s + 2) for s in range(num_sent)],
            "token_type_ids": [[0] * (b + s + 2) for s in range(num_sent)],
        }
        for b in range(4)
    ]
    batch = SimCSECollator(tokenizer)(features)
    longest = num_sent + 4  # b = 3 and s = num_sent - 1 tokens, plus [CLS] and [SEP]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    for tensor in batch.values():
        assert tensor.shape == (4, num_sent, longest) and tensor.dtype == torch.long
    for b in range(4):
        for s in range(num_sent):
            n = b + s + 2
            assert batch["input_ids"][b, s, :n].tolist() == features[b]["input_ids"][s]
            assert batch["input_ids"][b, s, n:].tolist() == [tokenizer.pad_token_id] * (longest - n)
            assert batch["attention_mask"][b, s].tolist() == [1] * n + [0] * (longest - n)


def test_collator_pad_to_multiple_of_and_missing_attention_mask():
    tokenizer = _tokenizer("roberta-base")
    batch = SimCSECollator(tokenizer, pad_to_multiple_of=8)([{"input_ids": [[0, 5, 2], [0, 5, 6, 7, 2]]}])
    assert batch["input_ids"].shape == (1, 2, 8)
    assert batch["input_ids"][0, 0].tolist() == [0, 5, 2] + [tokenizer.pad_token_id] * 5
    assert batch["attention_mask"][0].tolist() == [[1] * 3 + [0] * 5, [1] * 5 + [0] * 3]
    assert "token_type_ids" not in batch


def test_one_sentence_examples_get_two_views_masked_independently():
    tokenizer = _tokenizer("bert-base-uncased")
    features = _mlm_features(tokenizer, batch_size=8, num_sent=1, seed=4)
    collator = SimCSECollator(tokenizer, do_mlm=True, generator=torch.Generator().manual_seed(0))
    batch = collator(features)
    assert batch["input_ids"].shape[:2] == (8, 2)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key][:, 0], batch[key][:, 1])
    assert not torch.equal(batch["mlm_labels"][:, 0], batch["mlm_labels"][:, 1])


def test_collator_end_to_end_from_a_file(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text("s0,s1,neg\nA cat sat.,A cat is sitting on a mat.,Dogs bark.\nHi,,Bye now\n", encoding="utf-8")
    tokenizer = _tokenizer("bert-base-uncased")
    ds = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer)
    batch = SimCSECollator(tokenizer)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 3, len(tokenizer("A cat is sitting on a mat.")["input_ids"]))
    assert batch["token_type_ids"].shape == batch["input_ids"].shape


def test_collator_errors():
    gpt2 = AutoTokenizer.from_pretrained(tokenizer_path("gpt2"))  # fresh: no pad token yet
    with pytest.raises(SimCSEError, match=r"has no pad token.*tokenizer.pad_token = tokenizer.eos_token"):
        SimCSECollator(gpt2)
    gpt2.pad_token = gpt2.eos_token
    with pytest.raises(SimCSEError, match="needs a tokenizer with a mask token"):
        SimCSECollator(gpt2, do_mlm=True)
    bert = _tokenizer("bert-base-uncased")
    for bad in (1.5, 1.0, 0.0):  # the same (0, 1) bound as train.py's --mlm_probability
        with pytest.raises(SimCSEError, match=rf"`mlm_probability` must be in \(0, 1\), got {bad}"):
            SimCSECollator(bert, do_mlm=True, mlm_probability=bad)
    with pytest.raises(SimCSEError, match="pad_to_multiple_of must be a positive integer or None, got 0"):
        SimCSECollator(bert, pad_to_multiple_of=0)
    with pytest.raises(SimCSEError, match="pad_to_length must be a positive integer or None, got -1"):
        SimCSECollator(bert, pad_to_length=-1)
    collator = SimCSECollator(bert)
    with pytest.raises(SimCSEError, match="feature 1 holds 3 sentences but feature 0 holds 2"):
        collator([{"input_ids": [[1], [2]]}, {"input_ids": [[1], [2], [3]]}])
    with pytest.raises(SimCSEError, match="list of num_sent token lists"):
        collator([{"input_ids": [101, 102]}])
    with pytest.raises(SimCSEError, match="empty list of features"):
        collator([])


# ----- masked LM ------------------------------------------------------------------------------------


def _mlm_features(tokenizer, batch_size: int, num_sent: int, seed: int) -> list[dict]:
    """Random-length sentences of ordinary tokens, with [UNK] sprinkled in, wrapped in [CLS] ... [SEP]."""
    g = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(batch_size):
        sentences = []
        for _ in range(num_sent):
            length = int(torch.randint(40, 160, (1,), generator=g))
            body = torch.randint(1000, tokenizer.vocab_size, (length,), generator=g)
            body[::17] = tokenizer.unk_token_id
            sentences.append([tokenizer.cls_token_id, *body.tolist(), tokenizer.sep_token_id])
        features.append({"input_ids": sentences, "attention_mask": [[1] * len(s) for s in sentences]})
    return features


def test_mlm_masking_statistics():
    tokenizer = _tokenizer("bert-base-uncased")
    collator = SimCSECollator(tokenizer, do_mlm=True, mlm_probability=0.15, generator=torch.Generator().manual_seed(0))
    batch = collator(_mlm_features(tokenizer, batch_size=80, num_sent=3, seed=1))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    mlm_ids, labels = batch["mlm_input_ids"], batch["mlm_labels"]
    assert mlm_ids.shape == labels.shape == ids.shape

    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    eligible = mask.bool() & ~special
    chosen = labels != -100
    assert eligible.sum() > 20_000
    assert not (chosen & ~eligible).any()  # padding, [CLS], [SEP], [UNK] never chosen
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(mlm_ids[~chosen], ids[~chosen])  # only chosen positions change

    rate = chosen.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.02
    n = chosen.sum().item()
    masked = (mlm_ids[chosen] == tokenizer.mask_token_id).sum().item() / n
    unchanged = (mlm_ids[chosen] == ids[chosen]).sum().item() / n
    randomised = 1 - masked - unchanged
    assert abs(masked - 0.8) < 0.03
    assert abs(unchanged - 0.1) < 0.025 and abs(randomised - 0.1) < 0.025


def test_mlm_does_not_mutate_input_ids_and_is_reproducible():
    tokenizer = _tokenizer("bert-base-uncased")
    features = _mlm_features(tokenizer, batch_size=8, num_sent=2, seed=2)
    ids = pad_sentence_features(features, tokenizer.pad_token_id)["input_ids"]
    before = ids.clone()
    kwargs = {"mask_token_id": tokenizer.mask_token_id, "vocab_size": len(tokenizer), "special_ids": [101, 102, 0]}
    masked, labels = mask_tokens(ids, ids != 0, generator=torch.Generator().manual_seed(5), **kwargs)
    again, _ = mask_tokens(ids, ids != 0, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(ids, before)
    assert masked.data_ptr() != ids.data_ptr() and labels.data_ptr() != ids.data_ptr()
    assert not torch.equal(masked, ids) and torch.equal(masked, again)

    batch = SimCSECollator(tokenizer, do_mlm=True)(features)
    assert torch.equal(batch["input_ids"], before)


def test_mlm_probability_one_chooses_every_eligible_token():
    ids = torch.tensor([[[101, 7, 8, 102, 0]]])  # (batch 1, num_sent 1, 5)
    masked, labels = mask_tokens(
        ids, ids != 0, mask_token_id=103, vocab_size=30522, special_ids=[0, 101, 102], mlm_probability=1.0
    )
    assert labels.tolist() == [[[-100, 7, 8, -100, -100]]]
    assert masked[0, 0, [0, 3, 4]].tolist() == [101, 102, 0]


# ----- column roles: graded pairs (a score column) ---------------------------------------------------


def _roles(columns: dict, train_columns=None):
    from simcse.data import column_roles

    return column_roles(datasets.Dataset.from_dict(columns), train_columns, where="f.csv")


def test_a_score_column_is_found_by_name_in_any_position():
    roles = _roles({"score": ["4.5", "1"], "a": ["x", "y"], "b": ["u", "v"]})
    assert roles.sentences == ("a", "b") and roles.score == "score"
    plain = _roles({"sent0": ["x"], "sent1": ["y"], "hard_neg": ["z"]})
    assert plain.sentences == ("sent0", "sent1", "hard_neg") and plain.score is None


@pytest.mark.parametrize("third", [["4.5", "3", " -1e-2 ", ".5"], ["1", "", "2", "0"]])
def test_an_undeclared_numeric_column_is_ambiguous(third):
    with pytest.raises(SimCSEError, match=r"f.csv: column 3 \('label'\) holds numbers .*name the column 'score' or "
                                          r"pass `train_columns` sent0,sent1,score"):
        _roles({"a": ["w"] * 4, "b": ["x"] * 4, "label": third})
    # Sentences that merely contain digits are sentences; numbers under a role name are what they say.
    assert _roles({"a": ["w"] * 4, "b": ["x"] * 4, "label": ["7 cats", "3", "1", "2"]}).score is None
    assert _roles({"a": ["w"] * 4, "b": ["x"] * 4, "hard_neg": third}).sentences == ("a", "b", "hard_neg")


def test_train_columns_declares_roles_by_position():
    columns = {"premise": ["x"], "hypothesis": ["y"], "similarity": ["2.5"]}
    roles = _roles(columns, "sent0,sent1,score")
    assert roles.sentences == ("premise", "hypothesis") and roles.score == "similarity"
    assert _roles(columns, ["sent0", "sent1", "hard_neg"]).score is None


@pytest.mark.parametrize("spec, message", [
    ("sent0,score", "names 2 column role"),
    ("sent0,sent1,label", "unknown role"),
    ("sent0,sent0,score", "more than once"),
    ("sent1,sent0,score", "must read sent0, sent1"),
])
def test_bad_train_columns(spec, message):
    with pytest.raises(SimCSEError, match=message):
        _roles({"a": ["x"], "b": ["y"], "c": ["1"]}, spec)


def test_a_score_grades_exactly_one_pair():
    with pytest.raises(SimCSEError, match=r"'score' column 'score' grades a pair, so it needs exactly 2 sentence"):
        _roles({"a": ["x"], "score": ["1"]})
    with pytest.raises(SimCSEError, match="found 3"):
        _roles({"sent0": ["x"], "sent1": ["y"], "hard_neg": ["z"], "score": ["1"]})


def test_scores_are_tokenized_and_collated_as_float32(load):
    ds = load("g.jsonl",
              '{"sent0": "a b", "sent1": "a c", "score": 4.25}\n{"sent0": "d", "sent1": "e", "score": "1"}\n')
    tokenizer = _tokenizer("bert-base-uncased")
    examples = tokenize_dataset(ds, tokenizer)
    assert examples.num_sent == 2 and examples[0]["score"] == 4.25
    batch = SimCSECollator(tokenizer)(examples.__getitems__([1, 0]))
    assert batch["scores"].dtype == torch.float32 and batch["scores"].tolist() == [1.0, 4.25]
    assert batch["input_ids"].shape[:2] == (2, 2)
    from_dicts = SimCSECollator(tokenizer)([examples[1], examples[0]])  # the per-example path agrees
    assert from_dicts["scores"].tolist() == [1.0, 4.25]
    plain = tokenize_dataset(load("p.txt", "a\nb\n"), tokenizer)
    assert "scores" not in SimCSECollator(tokenizer)(plain.__getitems__([0, 1]))


@pytest.mark.parametrize("cell, held", [("high", "'high'"), ("nan", "'nan'"), ("-inf", "'-inf'"), ("1e39", "'1e39'"),
                                        (" ", "nothing")])
def test_a_score_that_is_not_a_number_names_its_file_line(load, cell, held):
    """column_roles (which tokenize_dataset calls when given no roles) refuses it, naming the FILE line
    (header = line 1, the blank line counted); the tokenizer's own parse stays as a last guard."""
    ds = load("g.csv", f"sent0,sent1,score\na,b,1\n\nc,d,{cell}\n")
    expected = rf"the training dataset, line 4: the 'score' column holds {re.escape(held)}.*not a finite number"
    with pytest.raises(SimCSEError, match=expected):
        tokenize_dataset(ds, _tokenizer("bert-base-uncased"))
    with pytest.raises(SimCSEError, match=rf"training data row 2: the 'score' column holds {re.escape(repr(cell))}"):
        tokenize_dataset(ds, _tokenizer("bert-base-uncased"), roles=ColumnRoles(("sent0", "sent1"), "score"))


def test_keyed_mlm_masks_do_not_depend_on_the_batch_split_or_padding():
    """With keys, a token's masking draws depend only on (seed, epoch, example, sentence, position): the
    same examples masked in one batch or split over two (as over two processes, each padded to its own
    longest) get the same masks; another epoch draws others; the masking rate is still ~15%."""
    import torch

    from simcse.data import mask_tokens

    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (6, 2, 20))
    mask = torch.ones_like(ids)
    mask[3:, :, 12:] = 0  # rows 3-5 are shorter
    kwargs = dict(mask_token_id=103, vocab_size=30522, special_ids=[0, 101, 102])
    whole = mask_tokens(ids, mask, keys=(7, 0, torch.arange(6)), **kwargs)
    first = mask_tokens(ids[:3], mask[:3], keys=(7, 0, torch.arange(3)), **kwargs)
    second = mask_tokens(ids[3:, :, :12], mask[3:, :, :12], keys=(7, 0, torch.arange(3, 6)), **kwargs)
    for full, part, rows, length in ((whole, first, slice(0, 3), 20), (whole, second, slice(3, 6), 12)):
        assert torch.equal(full[0][rows, :, :length], part[0]) and torch.equal(full[1][rows, :, :length], part[1])
    other_epoch = mask_tokens(ids, mask, keys=(7, 1, torch.arange(6)), **kwargs)
    assert not torch.equal(whole[1], other_epoch[1])
    big = torch.randint(1000, 2000, (400, 2, 32))
    rate = (mask_tokens(big, torch.ones_like(big), keys=(3, 0, torch.arange(400)), **kwargs)[1] != -100).float().mean()
    assert 0.14 < rate < 0.16
