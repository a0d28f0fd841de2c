"""simcse.data.prepare: STS-B as graded training pairs, read back by the training data path."""

from __future__ import annotations

import pytest

from helpers import write_sts_tree
from simcse.data import column_roles, load_training_dataset
from simcse.data.prepare import main, read_stsb_pairs
from simcse.errors import SimCSEError


def test_stsb_train_becomes_scored_pairs_the_trainer_reads(tmp_path, capsys):
    root = write_sts_tree(tmp_path / "data", n_pairs=6)
    out = tmp_path / "stsb.csv"
    main(["stsb", "--split", "train", "--senteval_data", str(root), "--output", str(out)])
    assert "wrote 6 scored pairs" in capsys.readouterr().out
    dataset = load_training_dataset(out, cache_dir=tmp_path / "cache")
    roles = column_roles(dataset)
    assert roles.sentences == ("sent0", "sent1") and roles.score == "score"
    assert dataset[2] == {"sent0": "a dog runs 2", "sent1": "a cat sleeps 2", "score": "2.0"}
    with pytest.raises(SimCSEError, match="already exists"):  # never overwrites
        main(["stsb", "--senteval_data", str(root), "--output", str(out)])


def test_quotes_stay_part_of_the_sentence_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "sts-train.csv"
    path.write_text('g\tf\t2012\t1\t3.5\the said "hi\tok"\textra\ng\tf\t2012\t2\tn/a\ta\tb\n', encoding="utf-8")
    with pytest.raises(SimCSEError, match=r"line 2: the score field holds 'n/a'"):
        read_stsb_pairs(path)
    path.write_text('g\tf\t2012\t1\t3.5\the said "hi\tok"\textra\n', encoding="utf-8")
    assert read_stsb_pairs(path) == [('he said "hi', 'ok"', 3.5)]
