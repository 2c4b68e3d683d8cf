"""The `mmat` command line. Thin by design: each command parses options and calls one library function.

Errors that a user must fix (``MmatError``) become one line on stderr and exit code 1; anything else
is a bug in mmat and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from mmat.errors import MmatError

__all__ = ["main", "cli"]


class MmatGroup(click.Group):
    """A click group that turns mmat's own errors into a clean message and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmatError as e:
            raise click.ClickException(str(e)) from None


def settings_options(*names: str):
    """Decorator adding `--NAME` flags for Settings fields; their values override env and mmat.toml."""
    from mmat.config import Settings

    flags = {
        "home": click.option("--home", type=click.Path(path_type=Path), help="MMAT_HOME: where the store, blobs and models live."),
        "teacher": click.option("--teacher", help=Settings.model_fields["teacher"].description),
        "controller": click.option("--controller", help=Settings.model_fields["controller"].description),
        "verifier": click.option("--verifier", help=Settings.model_fields["verifier"].description),
        "judge": click.option("--judge", help=Settings.model_fields["judge"].description),
        "api_base": click.option("--api-base", help=Settings.model_fields["api_base"].description),
        "concurrency": click.option("--concurrency", type=int, help=Settings.model_fields["concurrency"].description),
        "seed": click.option("--seed", type=int, help=Settings.model_fields["seed"].description),
        "temperature": click.option("--temperature", type=float, help=Settings.model_fields["temperature"].description),
    }

    def decorate(fn):
        for name in reversed(("home",) + names):
            fn = flags[name](fn)
        return fn

    return decorate


def build_settings(**flags):
    from mmat.config import load_settings

    return load_settings(**flags)


def with_settings(*names: str):
    """Collect the settings flags of a command into one `settings` argument."""

    def decorate(fn):
        @settings_options(*names)
        @functools.wraps(fn)
        def wrapper(**kwargs):
            flags = {n: kwargs.pop(n) for n in ("home",) + names}
            return fn(settings=build_settings(**flags), **kwargs)

        return wrapper

    return decorate


output_format = click.option(
    "--json", "fmt", flag_value="json", help="Print JSON instead of a table."
)
output_csv = click.option("--csv", "fmt", flag_value="csv", help="Print CSV instead of a table.")


@click.group(cls=MmatGroup)
@click.version_option(package_name="mmat")
def cli() -> None:
    """mmat: synthesize verified multimodal tool-use trajectories and tune local VLMs on them."""


# --- store ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("query")
@output_format
@output_csv
@with_settings()
def sql(settings, query: str, fmt: str | None) -> None:
    """Run any SQL over the store, e.g. mmat sql "select model, count(*) from lm_calls group by 1"."""
    from mmat.cli_output import render_rows
    from mmat.runtime import open_store

    with open_store(settings, read_only=True) as store:
        rows = store.sql(query)
    click.echo(render_rows(rows, fmt or "table"))


@cli.command()
@output_format
@click.option("--limit", type=int, default=20, show_default=True, help="Show at most this many runs, newest first.")
@with_settings()
def runs(settings, fmt: str | None, limit: int) -> None:
    """List runs (synth, demo, finetune, eval, ...) with their status and summary."""
    from mmat.cli_output import render_rows
    from mmat.runtime import open_store

    with open_store(settings, read_only=True) as store:
        rows = store.sql(
            "select run_id, kind, status, started_at, finished_at, summary from runs order by started_at desc limit ?",
            [limit],
        )
    click.echo(render_rows(rows, fmt or "table"))


# --- models and tools -----------------------------------------------------------------------------
@cli.command()
@output_format
@with_settings()
def models(settings, fmt: str | None) -> None:
    """Which teacher and local models are available here, and why not."""
    from mmat.cli_output import render_rows
    from mmat.lm import model_statuses

    rows = [s.model_dump() if hasattr(s, "model_dump") else dict(s._asdict()) for s in model_statuses(settings)]
    click.echo(render_rows(rows, fmt or "table"))


@cli.command()
@output_format
@with_settings()
def tools(settings, fmt: str | None) -> None:
    """The agent's tools, their backends and whether each runs on this machine."""
    from mmat.cli_output import render_rows
    from mmat.tools import tool_status

    rows = [s.model_dump() if hasattr(s, "model_dump") else dict(s._asdict()) for s in tool_status(settings)]
    click.echo(render_rows(rows, fmt or "table"))


# --- demo -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--tasks", type=int, default=3, show_default=True, help="Seeds to synthesize in the demo.")
@with_settings("teacher")
def demo(settings, tasks: int) -> None:
    """Run the whole pipeline on the embedded, offline teacher and print what landed."""
    from mmat.demo import run_demo

    summary = run_demo(settings, tasks=tasks)
    click.echo(summary.render())


def main() -> None:
    cli(prog_name="mmat")


if __name__ == "__main__":
    sys.exit(main())
