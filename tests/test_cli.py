"""CLI contract: every command documents itself; user mistakes give one line and a non-zero exit."""

import click
from click.testing import CliRunner

from mmat.cli import cli


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in _commands(cli):
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.help and param.name not in ("help", "version"):
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []


def test_help_runs_for_every_command():
    runner = CliRunner()
    for path, _ in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output
