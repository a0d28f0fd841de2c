"""The README and the docs/ pages point only at things that exist: every relative link (``[text](path)``,
``![alt](path)``) names an existing file or folder, and its ``#anchor`` a heading of the page it names;
every repository path named in inline code or in a layout block (the fenced blocks of docs/layout.md)
exists, and every ``simcse.*`` / ``senteval.*`` module named there can be found.

What counts as a repository path: a token with a slash whose first part is one of the repository's
top-level folders (``simcse/training/run.py``, ``tests/test_layout.py``, ``simcse/losses/``), or a bare
``.py`` / ``.sh`` name, which must be a top-level script (``train.py``, ``run_sup_example.sh``). Anything
else is what a run writes or a placeholder and is not checked: file names without a folder
(``config.json``, ``trainer_state.json``), other folders (``result/...``, ``../shared/data``, ``/tmp/...``),
URLs, tokens holding ``<``, ``*``, ``{``, ``$`` or ``...``, and quoted program output (a code span that
starts with ``error:``, the message a user sees). Text only: no model or library is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PAGE_IDS = [str(p.relative_to(REPO)) for p in PAGES]
# Pages whose fenced blocks are layout blocks (one repository path per line, checked like inline code).
LAYOUT_PAGES = {"docs/layout.md"}
# The top-level folders a repository path may start with.
ROOTS = {".ci", "SentEval", "bench", "data", "docs", "scripts", "simcse", "tests"}
# Where the dotted module names start.
PACKAGES = {"simcse": REPO / "simcse", "senteval": REPO / "SentEval" / "senteval"}
EXPECTED_PAGES = {"training", "evaluation", "migrating", "losses", "scale", "using", "reliability", "benchmarks",
                  "extending", "layout"}

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
PLACEHOLDER = re.compile(r"[<>*{}$]|\.\.\.")
MODULE = re.compile(r"^(simcse|senteval)(\.[A-Za-z_]\w*)+$")
SEPARATORS = re.compile(r"[,;()\[\]'\"=|:`]+")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def fenced_blocks(text: str) -> list[str]:
    return [match.group(0) for match in FENCE.finditer(text)]


def code_spans(text: str) -> list[str]:
    """The inline code spans of the prose (a span may run over a line break, never over a blank line)."""
    return [span for span in INLINE_CODE.findall(prose(text)) if "\n\n" not in span]


def named_in(spans: list[str]) -> list[str]:
    """The spans that name things, leaving out quoted program output."""
    return [span for span in spans if not span.lstrip().startswith("error:")]


def tokens(snippet: str) -> list[str]:
    found = []
    for word in snippet.split():
        if "://" in word:  # a URL
            continue
        found += [part.rstrip(".") for part in SEPARATORS.split(word) if part.rstrip(".")]
    return found


def candidates(snippets: list[str]) -> set[str]:
    """The repository paths and dotted module names named in the snippets (see the module docstring)."""
    found = set()
    for token in (t for snippet in snippets for t in tokens(snippet)):
        if PLACEHOLDER.search(token) or token.startswith(("/", "../", "-")):
            continue
        token = token.removeprefix("./")
        if "/" in token:
            if token.split("/")[0] in ROOTS:
                found.add(token.rstrip("/"))
        elif token.endswith((".py", ".sh")):
            found.add(token)
        elif MODULE.match(token):
            found.add(token)
    return found


def defines(path: Path, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", path.read_text(encoding="utf-8")) is not None


def module_exists(dotted: str) -> bool:
    """``simcse.a.b.name``: the packages and the module exist, and the first name after the module (a
    function, class or constant) appears in it; a name after a package must appear in its __init__.py."""
    first, *rest = dotted.split(".")
    folder = PACKAGES[first]
    for index, part in enumerate(rest):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
            continue
        if (folder / f"{part}.py").is_file():
            if index + 1 == len(rest):
                return True
            return defines(folder / f"{part}.py", rest[index + 1])
        return defines(folder / "__init__.py", part)
    return True


def exists(candidate: str) -> bool:
    return module_exists(candidate) if MODULE.match(candidate) else (REPO / candidate).exists()


def repository_paths(text: str, layout: bool = False) -> set[str]:
    """Every repository path and module named in a page: its inline code, and its fenced blocks when the
    page is a layout page."""
    return candidates(named_in(code_spans(text)) + (fenced_blocks(text) if layout else []))


def missing_paths(text: str, layout: bool = False) -> list[str]:
    return sorted(path for path in repository_paths(text, layout) if not exists(path))


def relative_links(text: str) -> list[str]:
    """The link targets of the prose that are not URLs (``http:``, ``mailto:``, ...)."""
    return [target for target in LINK.findall(prose(text)) if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text (code and link markup dropped), lower case,
    without punctuation and symbols, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(text: str, page: Path) -> list[str]:
    """Links of ``page`` whose file is missing (or outside the repository), or whose anchor is not a
    heading of the page it names."""
    broken = []
    for target in relative_links(text):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        if not resolved.exists() or not resolved.is_relative_to(REPO):
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(target)
    return broken


def test_the_docs_pages_are_there():
    assert EXPECTED_PAGES <= {p.stem for p in PAGES if p.parent.name == "docs"}
    assert all((REPO / root).is_dir() for root in ROOTS)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page):
    assert broken_links(page.read_text(encoding="utf-8"), page) == []


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_repository_path_exists(page):
    layout = str(page.relative_to(REPO)) in LAYOUT_PAGES
    assert missing_paths(page.read_text(encoding="utf-8"), layout) == []


def test_the_layout_page_names_every_library_module():
    named = repository_paths((REPO / "docs" / "layout.md").read_text(encoding="utf-8"), layout=True)
    modules = {str(p.relative_to(REPO)) for p in (REPO / "simcse").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "simcse"}
    assert modules - named == set()


SNIPPET = """Paths: `simcse/training/run.py`, `python -m simcse.training.demo --output_dir /tmp/runs/demo`,
`tests/test_layout.py`, `bench/eval_speed.py`, `simcse/losses/` and `train.py --do_eval`; stale ones:
`simcse/training.py`, `python -m simcse.prepare`, `simcse.modeling.encoder.no_such_function`, `gradcache.py`.
Not repository paths: `config.json`, `result/compare_losses/results/`, `/tmp/x.py`, `../shared/data`,
`seed-<s>/multiseed_seed.json`, `simcse/*.py`, `https://example.org/a/b.py`, `DIR`,
`error: run bash download_dataset.sh in SentEval/data/nowhere`.

```
simcse/errors.py      in a fenced block: checked on layout pages only
bench/no_such_bench.py
```
"""


def test_the_path_extractor_finds_known_paths_and_flags_missing_ones():
    assert repository_paths(SNIPPET) == {
        "simcse/training/run.py", "simcse.training.demo", "tests/test_layout.py", "bench/eval_speed.py",
        "simcse/losses", "train.py", "simcse/training.py", "simcse.prepare", "simcse.modeling.encoder.no_such_function",
        "gradcache.py",
    }
    assert missing_paths(SNIPPET) == ["gradcache.py", "simcse.modeling.encoder.no_such_function", "simcse.prepare",
                                      "simcse/training.py"]
    assert missing_paths(SNIPPET, layout=True) == ["bench/no_such_bench.py", "gradcache.py",
                                                   "simcse.modeling.encoder.no_such_function", "simcse.prepare",
                                                   "simcse/training.py"]


def test_the_link_check_flags_missing_files_and_anchors():
    page = REPO / "docs" / "example.md"  # not written: links resolve from docs/
    text = """[ok](../README.md) ![img](images/compare_losses.png) [anchor](training.md#data) [web](https://x.org/y)
[gone](nowhere.md) [bad anchor](training.md#no-such-heading) [outside](../../etc/passwd)

```
[in a code block](not-a-link.md)
```
"""
    assert broken_links(text, page) == ["nowhere.md", "training.md#no-such-heading", "../../etc/passwd"]


def test_slugs_follow_github():
    heading = "Several seeds: mean ± std and a confidence interval"
    assert slug(heading) == "several-seeds-mean--std-and-a-confidence-interval"
    assert slug("Running `evaluation.py`") == "running-evaluationpy"
    assert slug("Several GPUs: torchrun + DDP") == "several-gpus-torchrun--ddp"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
