"""Every example in the docs runs: ``python -m pytest docs``.

Each Markdown page under ``docs/`` (and the README, CONTRIBUTING) is one test. Its
```` ```python ```` and ```` ```pycon ```` blocks run in order in one namespace, in
a temporary working directory: a block with ``>>>`` prompts is a doctest (its
printed output is compared), any other block is executed as a script. A block
directly after a line ``<!-- no-run -->`` is shown, not run (for output of a long
job); shell blocks (```` ```bash ````, ```` ```console ````) are never run.
A page whose example needs an optional dependency that is not installed (PyTorch,
JAX, ...) is skipped from that example on, as the suite's ``importorskip`` tests are.
Docstring examples run separately:
``python -m pytest --doctest-modules --pyargs embtable --doctest-ignore-import-errors``
(the flag skips modules whose optional dependency is missing, e.g. Ray's).
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PAGES = sorted(DOCS.glob("*.md")) + [
    p for p in (ROOT / "README.md", ROOT / "CONTRIBUTING.md") if p.exists()
]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,})(?P<info>[^`\n]*)$")
RUN = {"python", "py", "pycon", "{code-block} python", "{code-cell} python"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Optional dependencies (extras); any other missing module is a failure.
OPTIONAL = {
    "torch",
    "jax",
    "jaxlib",
    "ray",
    "dask",
    "gensim",
    "numba",
    "tqdm",
    "matplotlib",
}
MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def _skip_if_optional(name: str | None, where: str) -> None:
    top = (name or "").split(".")[0]
    if top in OPTIONAL:
        pytest.skip(f"{where}: needs the optional dependency {top!r}")


def blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each fenced block that runs."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, info = m["ticks"], m["info"].strip()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i])
            i += 1
        i += 1
        skipped = start > 0 and lines[start - 1].strip() == "<!-- no-run -->"
        if info in RUN and not skipped:
            out.append((start + 1, info, textwrap.dedent("\n".join(body)) + "\n"))
    return out


def run_page(path: Path) -> int:
    ns: dict[str, object] = {"__name__": "__docs__"}
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    parser = doctest.DocTestParser()
    ran = 0
    for line, _info, code in blocks(path.read_text(encoding="utf-8")):
        where = f"{path.name}:{line}"
        if ">>>" in code:
            test = parser.get_doctest(code, ns, where, str(path), line)
            sink = _Collect()
            result = runner.run(test, out=sink, clear_globs=False)
            ns.update(test.globs)  # DocTest works on a copy of the namespace
            if result.failed:
                m = MISSING.search(sink.text)
                if m:
                    _skip_if_optional(m.group(1), where)
                pytest.fail(f"{where}: doctest failed\n{sink.text}", pytrace=False)
        else:
            try:
                exec(compile(code, where, "exec"), ns)  # noqa: S102 (the docs' own code)
            except ModuleNotFoundError as e:
                _skip_if_optional(e.name, where)
                raise
        ran += 1
    return ran


class _Collect:
    """A ``doctest`` output sink that keeps the report for the failure message."""

    def __init__(self) -> None:
        self.text = ""

    def __call__(self, s: str) -> None:
        self.text += s


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBTABLE_DOCS_EXAMPLES", "1")
    run_page(path)


def test_blocks_parser() -> None:
    text = (
        "```python\nx = 1\n```\n<!-- no-run -->\n```python\nraise SystemExit\n```\n"
        "```bash\nrm -rf /\n```\n````pycon\n>>> x + 1\n2\n````\n"
    )
    assert [(n, lang) for n, lang, _ in blocks(text)] == [(1, "python"), (11, "pycon")]


def test_a_failing_example_fails(tmp_path: Path) -> None:
    page = tmp_path / "bad.md"
    page.write_text("```pycon\n>>> 1 + 1\n3\n```\n")
    with pytest.raises(pytest.fail.Exception, match="bad.md:1"):
        run_page(page)


def test_missing_optional_dependency_skips(tmp_path: Path) -> None:
    page = tmp_path / "opt.md"
    page.write_text("```python\nimport torch_not_here_xyz\n```\n")
    with pytest.raises(ModuleNotFoundError):  # not an optional dependency: a failure
        run_page(page)
    page.write_text("```pycon\n>>> import jax.numpy_not_here\n```\n")
    if importlib.util.find_spec("jax") is None:
        with pytest.raises(pytest.skip.Exception, match="jax"):
            run_page(page)


def test_pages_with_examples_are_found() -> None:
    counted = {p.name: len(blocks(p.read_text(encoding="utf-8"))) for p in PAGES}
    assert counted.get("getting_started.md", 0) > 0, counted
