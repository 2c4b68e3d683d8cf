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


def test_every_cli_command_has_an_example_in_the_readme():
    import click

    from mmat.cli import cli

    text = README.read_text()
    missing = []
    for name, cmd in cli.commands.items():
        paths = [f"mmat {name} {sub}" for sub in cmd.commands] if isinstance(cmd, click.Group) else [f"mmat {name}"]
        if name == "eval":
            paths.append("mmat eval --bench")
        missing += [p for p in paths if p not in text]
    assert missing == []
