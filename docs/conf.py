"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``.

The API reference is generated from the installed package's docstrings (autodoc +
napoleon), so build after ``pip install ".[docs]"``. Capability pages are Markdown
(MyST); the table of contents lists them in ``CAPABILITIES`` order, skipping pages
that do not exist yet, and appends any other page under ``docs/`` it finds, so a
new page lands in the site without editing ``index.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import embtable

HERE = Path(__file__).resolve().parent

project = "embtable"
author = "the embtable developers"
copyright = "2026, the embtable developers"  # noqa: A001 (Sphinx's name)
release = embtable.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "conftest.py", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
# Type names in docstrings are prose ("int or None"), not cross-reference targets.
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = f"embtable {release}"
html_static_path: list[str] = []

# Pages of the capability chapter, in reading order. Pages other engineers add land
# here by name; a missing one is skipped rather than a broken link.
GUIDE = ["getting_started"]
CAPABILITIES = [
    "functional",
    "layers",
    "bags",
    "optimizers",
    "checkpoints",
    "word2vec",
    "torch_jax",
    "quantized",
    "vectors",
    "scale",
    "performance",
    "testing",
]
REFERENCE = ["api", "architecture", "changelog"]


def _pages() -> dict[str, list[str]]:
    present = {p.stem for p in HERE.glob("*.md")} | {p.stem for p in HERE.glob("*.rst")}
    listed = set(GUIDE) | set(CAPABILITIES) | set(REFERENCE) | {"index"}
    extra = sorted(present - listed)
    return {
        "guide": [p for p in GUIDE if p in present],
        "capabilities": [p for p in CAPABILITIES if p in present] + extra,
        "reference": [p for p in REFERENCE if p in present],
    }


def _toctree(caption: str, pages: list[str]) -> str:
    lines = ["```{toctree}", ":maxdepth: 2", f":caption: {caption}", ""]
    return "\n".join(lines + pages + ["```", ""])


def _fill_index(app, docname, source):  # type: ignore[no-untyped-def]
    if docname != "index":
        return
    pages = _pages()
    trees = (
        _toctree("Guide", pages["guide"])
        + _toctree("Capabilities", pages["capabilities"])
        + _toctree("Reference", pages["reference"])
    )
    source[0] = source[0].replace("<!-- toctrees -->", trees)


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("source-read", _fill_index)
    return {"parallel_read_safe": True}


sys.dont_write_bytecode = True
