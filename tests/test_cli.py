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


def test_every_command_has_examples_of_itself_in_its_help():
    """A new command adds its lines to mmat.cli.EXAMPLES (see the top of mmat/cli.py)."""
    from mmat.cli import EXAMPLES, command_paths

    paths = command_paths()
    assert sorted(set(paths) - set(EXAMPLES)) == [], "add these commands' examples to EXAMPLES in mmat/cli.py"
    assert sorted(set(EXAMPLES) - set(paths)) == [], "EXAMPLES names commands that do not exist"
    runner = CliRunner()
    for path, lines in EXAMPLES.items():
        assert lines and all(line.startswith(f"mmat {path}") or line.startswith(f"mmat {path.split()[0]} ") for line in lines), path
        out = runner.invoke(cli, [*path.split(), "--help"], terminal_width=400).output
        assert "Examples:" in out and all(line in out for line in lines), (path, out)


def _help(*path):
    return " ".join(CliRunner().invoke(cli, [*path, "--help"], terminal_width=400).output.split())


def test_defaults_come_from_the_objects_the_code_uses():
    from mmat.config import Settings
    from mmat.finetune.config import DPOTrainConfig, TrainConfig

    synth = _help("synth")
    for name in ("teacher", "concurrency", "trajectories_per_task"):
        default = Settings.model_fields[name].default
        assert f"[default: ({default}; mmat.toml or MMAT_{name.upper()} override it)]" in synth, name
    assert "--tasks INTEGER Seeds to run (each writes a few tasks). [default: 10]" in synth
    sft, dpo = _help("finetune", "sft"), _help("finetune", "dpo")
    for name, flag in [("lr", "--lr"), ("rank", "--rank"), ("epochs", "--epochs"), ("batch_size", "--batch-size")]:
        assert f"[default: ({TrainConfig.model_fields[name].default})]" in sft.split(flag, 1)[1].split("--", 1)[0], flag
    assert f"[default: ({DPOTrainConfig.model_fields['lr'].default})]" in dpo.split("--lr", 1)[1].split("--", 1)[0]
    assert TrainConfig.model_fields["lr"].default != DPOTrainConfig.model_fields["lr"].default


def test_export_help_lists_its_formats():
    from mmat.cli import EXPORT_FORMATS

    assert "{" + "|".join(EXPORT_FORMATS) + "}" in _help("export")


def test_a_count_is_never_a_sql_filter_and_k_means_one_thing():
    prefs = _help("prefs")
    assert "--tasks-where TEXT" in prefs and "--tasks " not in prefs and " -k" not in prefs
    short_k = [path for path, cmd in _commands(cli) for p in cmd.params if "-k" in getattr(p, "opts", [])]
    assert short_k == [("synth",)]


def test_transformers_future_warnings_are_not_shown_by_the_cli():
    import warnings

    from mmat.cli import quiet_transformers_deprecations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_transformers_deprecations()
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
        warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="mmat.something")
    assert [str(w.message) for w in caught] == ["ours"]
