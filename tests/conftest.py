"""Shared fixtures: a small real corpus and resource files for pipeline tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pipeline_helpers import write_resource

PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
#: A handful of real PostgreSQL manual pages (indexes chapter): enough text for retrieval to be non-trivial.
TINY_PAGES = ["indexes-intro.html", "indexes-types.html", "indexes-multicolumn.html", "indexes-partial.html",
              "indexes-unique.html", "indexes-expressional.html", "indexes-index-only-scans.html"]

MARKDOWN_DOC = """# Vacuum guide

## Why vacuum

Dead row versions left by updates and deletes take space until VACUUM reclaims them. Autovacuum runs it
in the background based on thresholds of changed rows per table.

## Freezing

Transaction ids wrap around after about four billion transactions, so old rows must be frozen by VACUUM
before that happens, or the server stops accepting writes to protect the data.
"""


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Seven real manual pages plus one Markdown file."""
    if not PG_DOCS.is_dir():
        pytest.fail("the PostgreSQL manual is missing: run scripts/setup.sh (installs postgresql-doc-15)")
    root = tmp_path_factory.mktemp("corpus")
    for page in TINY_PAGES:
        shutil.copy(PG_DOCS / page, root / page)
    (root / "vacuum.md").write_text(MARKDOWN_DOC)
    return root


@pytest.fixture
def make_resource(tmp_path, tiny_corpus):
    def make(name: str = "resource.yaml", **sections) -> Path:
        return write_resource(tmp_path / name, tiny_corpus, **sections)

    return make
