"""The one strict reader of user table files: UTF-8 text, lines, CSV and TSV rows, JSON lines and JSON arrays,
each row or record numbered by the 1-based file line it starts on.

Shared by every reader of files a user writes: the training files (:mod:`simcse.data.reading`), the custom
tasks (:mod:`senteval.custom`), BEIR folders (:mod:`simcse.evaluation.beir`) and the sources of the proxy
retrieval sets (:mod:`simcse.evaluation.proxy_sets`). It owns the parsing only; what the rows mean (headers,
column roles, ids, scores) belongs to each caller. A file is read as written or not at all:

* Text is UTF-8; a byte-order mark at the start of the file is dropped. A bad byte is named by its line and
  its byte in that line (1-based).
* Lines end at ``\\n`` only (a ``\\r`` before it is dropped): ``U+2028`` and the like stay inside a line. A
  blank line (whitespace only) is skipped but counted, so later rows keep their file line.
* CSV is Python's dialect read strictly: a quote closed in mid-cell is an error, a quote inside a quoted cell
  is written ``""``. A quoted cell holding a line break is refused, legal CSV though it is: in a file of one
  example per line it is nearly always a quote left open that swallowed the lines after it (text with line
  breaks belongs in ``.jsonl``). It is blamed on the line where the quote OPENED, and so is a quote never
  closed. A lone ``\\r`` (an old Mac line end) is refused in CSV and TSV rather than guessed at. A line of
  only separators (``,,``) is a row of empty cells, not a blank line.
* TSV cells are split on tabs, with no quoting (a quote character is text).
* JSON lines: one JSON value a line; a syntax error names its line and column. A JSON array: each record
  with the line it starts on.

Every defect raises :class:`TableError` with the line and a message (what is wrong, then the fix); the caller
names the file in its own words (``training file PATH, line N: ...``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from os import PathLike
from typing import Any

from senteval.errors import SentEvalError

Numbered = tuple[int, Any]  # (the 1-based file line a row or record starts on, the row or record)

_QUOTE_FIX = 'close the quote on line {0}, or write a quote inside a quoted cell as "" (doubled)'
_LONE_CR = "a lone carriage return (\\r) in {0}"
_LINE_END_FIX = "end lines with \\n or \\r\\n"
_SKIP = re.compile(r"[ \t\n\r]*")  # JSON whitespace
JSON_LINES_FIX = "write one JSON object per line"
JSON_DOCUMENT_FIX = "expected a JSON array of records or one record per line"


class TableError(SentEvalError):
    """A defect of a table file on file ``line`` (1-based); ``message`` says what is wrong and the fix, without
    naming the file: the caller does, ``f"{path}, line {err.line}: {err.message}"`` or its own style."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def decode_utf8(raw: bytes, line: int = 1) -> str:
    """The text of ``raw``, the bytes of a file from its line ``line`` on (1: the whole file, whose byte-order
    mark is dropped). A bad byte raises :class:`TableError` on its line, with the message ``byte B is 0xNN
    (reason); convert the file to UTF-8, ...`` (B: 1-based in its line): the caller says that the file is not
    UTF-8 (``training file PATH is not UTF-8: line N, byte ...``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = line + raw.count(b"\n", 0, err.start)
        byte = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise TableError(bad, f"byte {byte} is 0x{raw[err.start]:02x} ({err.reason}); convert the file to UTF-8, "
                              "e.g. `iconv -f latin1 -t utf-8`") from None
    return text.removeprefix("\ufeff") if line == 1 else text


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line of ``text``, without its line end (see the module docstring)."""
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 etc. stay in the text
        if line.strip():
            yield number, line.removesuffix("\r")


def file_lines(path: str | PathLike) -> Iterator[tuple[int, str]]:
    """:func:`text_lines` of a UTF-8 file, read and decoded line by line (memory holds one line); a bad byte
    raises :class:`TableError` as :func:`decode_utf8` does."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, number).removesuffix("\n")
            if line.strip():
                yield number, line.removesuffix("\r")


def tsv_rows(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells split on tabs) of each line of ``lines`` (:func:`text_lines`, :func:`file_lines`);
    a lone ``\\r`` is a :class:`TableError`."""
    for number, line in lines:
        if "\r" in line:
            raise TableError(number, f"{_LONE_CR.format('the line')}; {_LINE_END_FIX}")
        yield number, line.split("\t")


def csv_rows(text: str, holder: str = "a table file") -> Iterator[tuple[int, list[str]]]:
    """(the line the row starts on, cells) of each non-blank row of strict CSV ``text``; see the module docstring.
    ``holder`` names the file in the message on a quoted line break (``a training file``)."""
    # newline="\n": lines end at \n only, so the reader's line_num counts lines as the file does.
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
    start = 1  # the line the current row starts on
    try:
        for row in reader:
            if any("\n" in cell or "\r" in cell for cell in row):
                runs = f"runs on to line {reader.line_num}" if reader.line_num > start else "holds a line break"
                raise TableError(start, f"a quoted cell opened on this line {runs}, but {holder} holds one example "
                                        f'per line (an unclosed " quote?); {_QUOTE_FIX.format(start)}')
            if row and not (len(row) == 1 and not row[0].strip()):  # else a blank line
                yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        why, fix = str(err), _QUOTE_FIX.format(start)
        if why.startswith("unexpected end"):
            why = f'a " quote opened on this line is never closed (the file ends inside it, on line {reader.line_num})'
        elif why.startswith("field larger"):
            why = (f'a cell that starts on this line runs past {csv.field_size_limit()} characters (up to line '
                   f'{reader.line_num}): an unclosed " quote?')
        elif why.startswith("new-line"):
            why, fix = _LONE_CR.format("an unquoted cell"), _LINE_END_FIX
        else:
            why = f"not valid CSV ({why}, seen on line {reader.line_num}): a quote closed in mid-cell?"
        raise TableError(start, f"{why}; {fix}") from None


def json_lines(lines: Iterable[tuple[int, str]], fix: str = JSON_LINES_FIX) -> Iterator[Numbered]:
    """(line number, value) of each line of ``lines`` (:func:`text_lines`, :func:`file_lines`), parsed as one
    JSON value; a syntax error is a :class:`TableError` naming its column, then ``fix``."""
    for number, line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise TableError(number, f"not valid JSON ({err.msg} at column {err.colno}); {fix}") from None
        yield number, value


def json_array(text: str, fix: str = JSON_DOCUMENT_FIX) -> list[Numbered]:
    """The records of the JSON array that ``text`` holds, each with the line it starts on; a syntax error is a
    :class:`TableError` naming its own line and column, then ``fix``."""
    decoder, records, line, counted = json.JSONDecoder(), [], 1, 0
    at = _SKIP.match(text).end()
    try:
        if not text.startswith("[", at):
            raise json.JSONDecodeError("Expecting '['", text, at)
        at = _SKIP.match(text, at + 1).end()  # after the "["
        more = not text.startswith("]", at)
        at = at if more else _SKIP.match(text, at + 1).end()
        while more:
            line, counted = line + text.count("\n", counted, at), at
            record, at = decoder.raw_decode(text, at)
            records.append((line, record))
            at = _SKIP.match(text, at).end()
            if not text.startswith((",", "]"), at):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
            more, at = text[at] == ",", _SKIP.match(text, at + 1).end()
        if at < len(text):
            raise json.JSONDecodeError("Extra data after the array", text, at)
    except json.JSONDecodeError as err:
        raise TableError(err.lineno, f"not valid JSON ({err.msg} at column {err.colno}); {fix}") from None
    return records


def json_records(text: str, document: bool = False) -> tuple[list[Numbered], bool]:
    """(records with the line each starts on, whether they came from a JSON array) of JSON lines ``text``; with
    ``document`` (a ``.json`` file) also a JSON array of records or one value spanning the whole text, which is
    one record when it is an object (else the text is read as JSON lines)."""
    if not document:
        return list(json_lines(text_lines(text))), False
    first = _SKIP.match(text).end()  # where the first record or the "[" of an array starts
    if text.startswith("[", first):
        return json_array(text), True
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None  # not one JSON document: read it as JSON lines
    if isinstance(value, dict):
        return [(text.count("\n", 0, first) + 1, value)], False
    return list(json_lines(text_lines(text), JSON_DOCUMENT_FIX)), False
