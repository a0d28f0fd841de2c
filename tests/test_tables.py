"""senteval.tables, the one strict reader of user table files: known answers for its line numbers and its
refusals, then one test per caller (the training reader, the custom tasks, the BEIR reader, the proxy sets)
showing that the caller's error is the shared reader's, under the caller's own label."""

from __future__ import annotations

import pytest

from helpers import write_beir_folder
from senteval.custom import CustomSTSEval, read_table
from senteval.errors import SentEvalError
from senteval.tables import (
    TableError,
    csv_rows,
    decode_utf8,
    file_lines,
    json_array,
    json_lines,
    json_records,
    text_lines,
    tsv_rows,
)
from simcse.data import load_training_dataset
from simcse.errors import SimCSEError
from simcse.evaluation.beir import read_beir_folder
from simcse.evaluation.proxy_sets import read_nli_triples, read_scored_pairs

# Line 4 opens a quote that line 5 closes: legal CSV, one cell holding a line break; refused, blamed on line 4.
SPANNING = 'sent0,sent1,score\na,b,1\nc,d,2\n"e,f,3\ng",h,4\ni,j,5\n'
# Line 4 opens a quote that no line closes: the file ends inside it, on line 6.
UNCLOSED = 'sent0,sent1,score\na,b,1\nc,d,2\n"e,f,3\ng,h,4\ni,j,5\n'


def table_error(function, *args) -> TableError:
    """The TableError that reading ``args`` with ``function`` (a generator or a list maker) raises."""
    with pytest.raises(TableError) as caught:
        list(function(*args))
    return caught.value


# ----- the shared reader: known answers ---------------------------------------------------------------


def test_csv_rows_keep_their_file_lines_across_blank_lines():
    text = "x,y\r\n\n  \n\"a, b\",c\n\ne,\"f \"\"g\"\"\"\n,\n"
    assert list(csv_rows(text)) == [(1, ["x", "y"]), (4, ["a, b", "c"]), (6, ["e", 'f "g"']), (7, ["", ""])]


def test_a_quote_opened_on_line_4_and_closed_on_line_5_is_refused_naming_line_4():
    err = table_error(csv_rows, SPANNING)
    assert err.line == 4 and str(err) == f"line 4: {err.message}"
    assert err.message == ('a quoted cell opened on this line runs on to line 5, but a table file holds one example '
                           'per line (an unclosed " quote?); close the quote on line 4, or write a quote inside a '
                           'quoted cell as "" (doubled)')
    assert "but a training file holds" in table_error(lambda t: csv_rows(t, "a training file"), SPANNING).message


def test_an_unclosed_quote_is_refused_naming_the_line_it_opened_on():
    err = table_error(csv_rows, UNCLOSED)
    assert err.line == 4
    assert err.message.startswith('a " quote opened on this line is never closed (the file ends inside it, on line 6)')
    assert isinstance(err, SentEvalError)


def test_csv_refusals_a_quote_closed_mid_cell_a_lone_carriage_return_a_runaway_cell():
    err = table_error(csv_rows, 'a,b\nc,"d" e\n')
    assert err.line == 2 and err.message.startswith("not valid CSV (',' expected after '\"', seen on line 2)")
    err = table_error(csv_rows, "a,b\nc\rd,e\n")
    assert (err.line, err.message) == (2, "a lone carriage return (\\r) in an unquoted cell; end lines with \\n or "
                                          "\\r\\n")
    assert table_error(csv_rows, 'a,b\n"c\rd",e\n').message.startswith("a quoted cell opened on this line holds a "
                                                                       "line break")
    err = table_error(csv_rows, 'a,b\nc,"d\n' + "word " * 30_000)  # past csv's field size limit before the end
    assert err.line == 2 and "runs past 131072 characters" in err.message and "close the quote on line 2" in err.message


def test_decode_utf8_names_the_line_and_byte_and_drops_the_bom():
    assert decode_utf8("\ufeffa\nb".encode()) == "a\nb"
    assert decode_utf8("\ufeffb".encode(), line=2) == "\ufeffb"  # a later line: not the start of the file
    err = table_error(decode_utf8, b"ok\nab\xffc\n")
    assert (err.line, err.message) == (2, "byte 3 is 0xff (invalid start byte); convert the file to UTF-8, "
                                          "e.g. `iconv -f latin1 -t utf-8`")
    assert table_error(decode_utf8, b"x\n" + "caf\u00e9".encode("latin-1"), 7).line == 8


def test_text_lines_and_file_lines_agree(tmp_path):
    raw = "\ufeffone\r\n\n \t\nfour\u2028still four\nfive".encode()
    expected = [(1, "one"), (4, "four\u2028still four"), (5, "five")]
    assert list(text_lines(decode_utf8(raw))) == expected
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    assert list(file_lines(path)) == expected
    path.write_bytes(b"one\n\ntwo \xe9\n")
    err = table_error(file_lines, path)
    assert err.line == 3 and err.message.startswith("byte 5 is 0xe9 (invalid continuation byte)")


def test_tsv_rows_split_on_tabs_only_and_refuse_a_lone_carriage_return():
    assert list(tsv_rows(text_lines('a\t"b, c"\r\n\nd\t\te\n'))) == [(1, ["a", '"b, c"']), (3, ["d", "", "e"])]
    err = table_error(tsv_rows, text_lines("a\tb\nc\rd\te\n"))
    assert (err.line, err.message) == (2, "a lone carriage return (\\r) in the line; end lines with \\n or \\r\\n")


def test_json_lines_name_the_line_and_column_of_a_syntax_error():
    assert list(json_lines(text_lines('{"a": 1}\n\n[2]\n'))) == [(1, {"a": 1}), (3, [2])]
    err = table_error(json_lines, text_lines('{"a": 1}\n\n{"a": }\n'))
    assert (err.line, err.message) == (3, "not valid JSON (Expecting value at column 7); write one JSON object per "
                                          "line")


def test_json_array_records_keep_the_line_they_start_on():
    text = '[\n  {"a": 1},\n\n  {"a": 2}, {"a": 3},\n  {"a":\n    4}\n]\n'
    assert json_array(text) == [(2, {"a": 1}), (4, {"a": 2}), (4, {"a": 3}), (5, {"a": 4})]
    assert json_array(" [ ] ") == []
    err = table_error(json_array, '[\n {"a": 1},\n {"a": 2} {"a": 3}\n]')
    assert (err.line, err.message) == (3, "not valid JSON (Expecting ',' delimiter at column 11); expected a JSON "
                                          "array of records or one record per line")
    assert table_error(json_array, '[{"a": 1}] x').message.startswith("not valid JSON (Extra data after the array")


def test_json_records_of_a_document_an_array_one_object_or_json_lines():
    assert json_records('\n[{"a": 1}]', document=True) == ([(2, {"a": 1})], True)
    assert json_records('\n\n{"a":\n 1}', document=True) == ([(3, {"a": 1})], False)
    assert json_records('{"a": 1}\n{"a": 2}', document=True) == ([(1, {"a": 1}), (2, {"a": 2})], False)
    assert json_records('[{"a": 1}]') == ([(1, [{"a": 1}])], False)  # JSON lines: the array is one value


# ----- each caller reads through it ---------------------------------------------------------------------


def test_the_training_reader_and_the_custom_sts_reader_refuse_the_same_csv_naming_line_4(tmp_path):
    for content in (SPANNING, UNCLOSED):
        shared = table_error(csv_rows, content)
        training = tmp_path / "train.csv"
        training.write_text(content, encoding="utf-8")
        with pytest.raises(SimCSEError) as caught:
            load_training_dataset(training, cache_dir=tmp_path / "cache")
        assert str(caught.value) == (f"training file {training}, line 4: "
                                     + shared.message.replace("a table file", "a training file"))
        custom = tmp_path / "pairs.csv"
        custom.write_text(content, encoding="utf-8")
        with pytest.raises(SentEvalError) as caught:
            CustomSTSEval(custom)
        assert str(caught.value) == f"{custom}:4: {shared.message}"


def test_the_training_reader_decodes_and_parses_json_with_the_shared_reader(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"good\n\n\xfe bad\n")
    with pytest.raises(SimCSEError) as caught:
        load_training_dataset(path, cache_dir=tmp_path / "cache")
    shared = table_error(decode_utf8, path.read_bytes())
    assert str(caught.value) == f"training file {path} is not UTF-8: line 3, {shared.message}"
    path = tmp_path / "t.json"
    path.write_text('[\n {"sent0": "a"},\n {"sent0": }\n]', encoding="utf-8")
    with pytest.raises(SimCSEError) as caught:
        load_training_dataset(path, cache_dir=tmp_path / "cache")
    shared = table_error(json_array, path.read_text(encoding="utf-8"))
    assert str(caught.value) == f"training file {path}, line 3: {shared.message}"


def test_the_custom_reader_uses_the_shared_rows(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a\tb\t1\r\n\nc\td\t0\n", encoding="utf-8")
    assert read_table(tsv) == ("tsv", list(tsv_rows(text_lines(tsv.read_text(encoding="utf-8")))), None)
    assert read_table(tsv)[1] == [(1, ["a", "b", "1"]), (3, ["c", "d", "0"])]
    tsv.write_text("a\tb\t1\rc\td\t0\n", encoding="utf-8")  # an old Mac line end: refused, no longer a line break
    with pytest.raises(SentEvalError, match=r"p\.tsv:1: a lone carriage return \(\\r\) in the line"):
        read_table(tsv)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"s1": "a", "s2": "b", "label": 1}\n{"s1": "c", \n', encoding="utf-8")
    shared = table_error(json_lines, text_lines(jsonl.read_text(encoding="utf-8")))
    with pytest.raises(SentEvalError) as caught:
        read_table(jsonl)
    assert str(caught.value) == f"{jsonl}:2: {shared.message}"


def test_the_beir_reader_uses_the_shared_json_lines_and_tsv_rows(tmp_path):
    corpus = [{"_id": "d1", "text": "a"}, '{"_id": "d2", "text": }']
    root = write_beir_folder(tmp_path / "json", corpus, {"q1": "a"}, [("q1", "d1", 1)])
    shared = table_error(json_lines, file_lines(root / "corpus.jsonl"))
    with pytest.raises(SimCSEError) as caught:
        read_beir_folder(root)
    assert str(caught.value) == f"{root / 'corpus.jsonl'} line 2: {shared.message}"
    root = write_beir_folder(tmp_path / "qrels", {"d1": "a"}, {"q1": "a"}, ["q1\td1\t1\r"])  # "1\r\n": fine
    assert read_beir_folder(root).qrels == {"q1": {"d1": 1}}
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\r\r\n")
    shared = table_error(tsv_rows, file_lines(root / "qrels" / "test.tsv"))
    with pytest.raises(SimCSEError) as caught:
        read_beir_folder(root)
    assert str(caught.value) == f"{root / 'qrels' / 'test.tsv'} line 2: {shared.message}"


def test_the_proxy_set_sources_are_read_by_the_shared_reader(tmp_path):
    nli = tmp_path / "nli.csv"
    nli.write_text('sent0,sent1,hard_neg\na,b,c\n\n"d,e,f\ng",h,i\n', encoding="utf-8")
    with pytest.raises(SimCSEError) as caught:
        read_nli_triples(nli)
    assert str(caught.value) == f"{nli}, line 4: {table_error(csv_rows, nli.read_text(encoding='utf-8')).message}"
    nli.write_text('\ufeffsent0,sent1,hard_neg\na,"b, c",d\n\ne,f,g\n', encoding="utf-8")
    assert read_nli_triples(nli) == [(2, ("a", "b, c", "d"), None), (4, ("e", "f", "g"), None)]
    pairs = tmp_path / "sts.csv"
    pairs.write_text("g\tx\t4.5\ta\tb\r\n\ng\tx\t1\tc\td\n", encoding="utf-8")
    assert read_scored_pairs(pairs, (3, 4, 2), header=False) == [(1, ("a", "b"), 4.5), (3, ("c", "d"), 1.0)]
    pairs.write_bytes(b"g\tx\t4.5\ta\tb\n" + "g\tx\t1\tcaf\u00e9\td".encode("latin-1") + b"\n")
    with pytest.raises(SimCSEError, match=r"sts\.csv is not UTF-8: line 2, byte 10 is 0xe9"):
        read_scored_pairs(pairs, (3, 4, 2), header=False)
