"""The README is part of the product: its generated parts must match the code."""

from pathlib import Path

from mmat.config import settings_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_settings_table_matches_the_code():
    assert settings_markdown() in README.read_text(), (
        "README settings table is stale: replace it with `python -c 'from mmat.config import settings_markdown as m; print(m())'`"
    )


def test_readme_keeps_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
