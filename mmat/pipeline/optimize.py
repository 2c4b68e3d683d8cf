"""`mmat optimize`: compile one mmat program with a DSPy optimizer against a verifier-based metric.

Steps: build the train/val sets from the store, score the program on val, compile it, score it again,
save it (DSPy's JSON plus an mmat header), and record the run (one ``runs`` row through the run
lifecycle, an ``optimization_runs`` row; every LM call lands in ``lm_calls`` under the run). The pieces
(programs, sets, metrics, compiled files) are in ``mmat.optimizers``; this module orchestrates them. The function prints nothing: it returns an
``OptimizeSummary`` for the CLI to print. DSPy's optimizers print their own progress; it goes to stderr
with ``progress=True`` and nowhere otherwise, so stdout stays clean for scripting.

What each optimizer needs:

* ``bootstrap`` (BootstrapFewShot) — the metric and a trainset: runs the program on train examples and
  keeps traces that score at least the program's threshold as demos.
* ``mipro`` (MIPROv2) — also a valset and many more LM calls: proposes instructions with a prompt model
  and searches instruction x demo combinations (needs ``optuna``).
* ``gepa`` (GEPA) — a reflection LM and metric feedback: it reads the verifiers' reasons and rewrites
  the instructions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

import mmat
from mmat.config import Settings
from mmat.errors import ConfigError
from mmat.ids import content_id, sha256_file
from mmat.optimizers.compiled import CompiledHeader, save_compiled, state_digest
from mmat.optimizers.datasets import Sets, build_sets
from mmat.optimizers.programs import ProgramEntry, get_program, role_model
from mmat.optimizers.scoring import Scored, score_program
from mmat.store.runs import run_lifecycle, settings_record, utcnow

__all__ = ["OptimizeSummary", "OptimizeRequest", "run_optimize", "OPTIMIZERS", "Optimizer", "Budget"]

log = logging.getLogger(__name__)

Optimizer = Literal["bootstrap", "mipro", "gepa"]
Budget = Literal["light", "medium", "heavy"]
OPTIMIZERS: tuple[str, ...] = ("bootstrap", "mipro", "gepa")
BUDGETS: tuple[str, ...] = ("light", "medium", "heavy")
_CHATTY_LOGGERS = ("dspy", "optuna", "gepa")  # INFO-level progress logs, silenced with progress=False


class OptimizeSummary(BaseModel):
    """What `mmat optimize` did; the CLI prints :meth:`render`."""

    program: str
    optimizer: str
    n_train: int
    n_val: int
    metric_before: float
    metric_after: float
    out: Path
    opt_run_id: str
    val_from_train: bool = False
    skipped: int = 0
    seconds: float = 0.0
    unchanged: bool = False  # the compiled state equals the input's (no demos, no new instructions)
    sha256: str | None = None  # of the saved file (also in the run's settings, with its path)

    def render(self) -> str:
        delta = self.metric_after - self.metric_before
        line = (f"optimize {self.program} with {self.optimizer}: metric {self.metric_before:.3f} -> "
                f"{self.metric_after:.3f} ({delta:+.3f}) on {self.n_val} validation example(s), "
                f"{self.n_train} training example(s), {self.seconds:.1f}s; saved {self.out}")
        if self.val_from_train:
            line += "\nnote: only one example was selected, so it served as both train and validation set"
        if self.skipped:
            line += f"\nnote: {self.skipped} selected row(s) were skipped (missing, unlabelled or invalid)"
        if self.unchanged:
            return line + ("\nthe compiled program equals the input (no demos, no new instructions): it changes nothing. "
                           "Select more training examples (--trainset) or try --optimizer mipro or gepa; "
                           "--require-change makes this an error")
        return line + f"\nuse it: mmat synth --program {self.out}"


# --- output hygiene ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _dspy_output(progress: bool) -> Iterator[None]:
    """DSPy's optimizers print and draw tqdm bars (some on stdout): send them to stderr, or drop them."""
    if progress:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sink = io.StringIO()
    chatty = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in chatty]
    try:
        for logger in chatty:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)
        if sink.getvalue().strip():
            log.debug("optimizer output:\n%s", sink.getvalue())


class _Phase:
    """One line of progress per phase on stderr (the run's progress bar while scoring)."""

    def __init__(self, run: Any):
        self.run = run
        self.enabled = run.show_progress

    @contextlib.contextmanager
    def scoring(self, label: str, total: int) -> Iterator[Any]:
        if not self.enabled:
            yield None
            return
        with self.run.progress(label, total) as bar:
            yield bar.advance

    def say(self, text: str) -> None:
        if self.enabled:
            from rich.console import Console

            Console(stderr=True).print(text)


# --- the optimizers --------------------------------------------------------------------------------------
def _compile(optimizer: str, entry: ProgramEntry, student: Any, sets: Sets, metric: Any, settings: Settings, *,
             auto: Budget, trials: int | None, max_demos: int, prompt_lm: Any) -> Any:
    import dspy

    threads = settings.concurrency
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(metric=metric, metric_threshold=entry.bootstrap_threshold,
                                             max_bootstrapped_demos=max_demos, max_labeled_demos=0, max_rounds=1)
        return teleprompter.compile(student, trainset=sets.train)
    if optimizer == "mipro":
        try:
            import optuna  # noqa: F401  (MIPROv2 imports it lazily, deep inside compile)
        except ImportError:
            raise ConfigError("--optimizer mipro needs optuna: pip install optuna (or use bootstrap or gepa)") from None
        budget: dict[str, Any] = {"auto": auto} if trials is None else {"auto": None, "num_candidates": max(2, trials)}
        teleprompter = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=dspy.settings.lm,
                                    max_bootstrapped_demos=max_demos, max_labeled_demos=0, num_threads=threads,
                                    seed=settings.seed, metric_threshold=entry.bootstrap_threshold, verbose=False,
                                    track_stats=False, **budget)
        extra: dict[str, Any] = {} if trials is None else {"num_trials": trials, "minibatch": False}
        return teleprompter.compile(student, trainset=sets.train, valset=sets.val, **extra)
    if optimizer == "gepa":
        budget = {"auto": auto} if trials is None else {"max_full_evals": trials}
        teleprompter = dspy.GEPA(metric=metric, reflection_lm=prompt_lm, num_threads=threads, seed=settings.seed,
                                 track_stats=False, **budget)
        return teleprompter.compile(student, trainset=sets.train, valset=sets.val)
    raise ConfigError(f"unknown optimizer {optimizer!r}: choose from {', '.join(OPTIMIZERS)}")


def _score(phase: _Phase, label: str, program: Any, examples: list[Any], metric: Any, threads: int) -> Scored:
    with phase.scoring(label, len(examples)) as advance:
        return score_program(program, examples, metric, threads=threads, on_done=advance)


class OptimizeRequest(BaseModel):
    """What to optimize and how; validated before the store is touched."""

    program: str
    optimizer: str
    out: Path
    trainset_sql: str | None = None
    valset_sql: str | None = None
    auto: str = "light"
    trials: int | None = None
    max_demos: int = 4
    prompt_model: str | None = None

    def check(self) -> ProgramEntry:
        entry = get_program(self.program)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
        if self.auto not in BUDGETS:
            raise ConfigError(f"unknown budget {self.auto!r}: choose from {', '.join(BUDGETS)}")
        if self.out.suffix != ".json":
            raise ConfigError(f"--out {self.out}: a compiled program is saved as JSON; give a path ending in .json")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.max_demos < 0:
            raise ConfigError(f"--max-demos must be 0 or more, got {self.max_demos}")
        return entry

    @property
    def proposes(self) -> bool:
        """Whether the optimizer writes instructions with a prompt model."""
        return self.optimizer in ("mipro", "gepa")


def _optimize(store: Any, settings: Settings, request: OptimizeRequest, entry: ProgramEntry, sets: Sets,
              opt_run_id: str, phase: _Phase) -> tuple[Any, Scored, Scored, str]:
    """Score, compile, score again, with the role's model and every LM call recorded under the run.

    Also returns the digest of the program's state before compiling, to tell an unchanged result."""
    import dspy

    from mmat.lm import adapter_for, build_lm
    from mmat.optimizers.judges import Judge
    from mmat.store import LMCallRecorder

    model = role_model(settings, entry.role)
    metric = entry.metric_for(settings, Judge(settings) if entry.needs_judge else None)
    student = entry.target(entry.build(settings, store), settings.workspaces_dir / "optimize" / opt_run_id)
    initial = state_digest(student.program)
    prompt_lm = build_lm(request.prompt_model or settings.teacher, settings=settings) if request.proposes else None
    threads, name = settings.concurrency, request.program
    with dspy.context(lm=build_lm(model, settings=settings), adapter=adapter_for(model),
                      callbacks=[LMCallRecorder(store, opt_run_id)]):
        before = _score(phase, f"{name}: scoring before", student, sets.val, metric, threads)
        phase.say(f"{name}: compiling with {request.optimizer} on {len(sets.train)} training example(s)")
        with _dspy_output(phase.enabled):
            compiled = _compile(request.optimizer, entry, student, sets, metric, settings, auto=request.auto,
                                trials=request.trials, max_demos=request.max_demos, prompt_lm=prompt_lm)
        after = _score(phase, f"{name}: scoring after", compiled, sets.val, metric, threads)
    return compiled, before, after, initial


def _run_row(settings: Settings, request: OptimizeRequest, model: str, sets: Sets, summary: OptimizeSummary) -> dict[str, Any]:
    """The optimization_runs row: the figures, and the settings plus what was asked (SQL, budget, examples)."""
    asked = request.model_dump(mode="json", exclude={"program", "optimizer", "out"})
    if not request.proposes:
        asked["prompt_model"] = None
    asked |= {"train_ids": [e.subject_id for e in sets.train], "val_ids": [e.subject_id for e in sets.val]}
    return {
        "opt_run_id": summary.opt_run_id, "program": summary.program, "optimizer": summary.optimizer, "teacher": model,
        "n_train": summary.n_train, "n_val": summary.n_val, "metric_before": summary.metric_before,
        "metric_after": summary.metric_after, "out_path": str(summary.out),
        "settings": settings_record(settings) | {"optimize": asked}, "created_at": utcnow(),
    }


def run_optimize(
    settings: Settings,
    *,
    program: str,
    optimizer: Optimizer,
    trainset_sql: str | None = None,
    valset_sql: str | None = None,
    out: Path,
    progress: bool = True,
    auto: Budget = "light",
    trials: int | None = None,
    max_demos: int = 4,
    prompt_model: str | None = None,
    command: str = "mmat optimize",
    require_change: bool = False,
) -> OptimizeSummary:
    """Compile ``program`` with ``optimizer`` on examples from the store; save it to ``out`` (JSON).

    ``auto`` is DSPy's budget preset for mipro and gepa; ``trials`` replaces it with a fixed budget (mipro:
    that many trials and candidates, gepa: that many full evaluations). ``max_demos`` caps bootstrapped
    demos (bootstrap, mipro). ``prompt_model`` writes new instructions (MIPROv2's prompt model, GEPA's
    reflection LM); it defaults to the teacher. ``require_change`` refuses (ConfigError, run failed, nothing
    saved) a compiled program whose state equals the input's.
    """
    from mmat.lm import check_model, configure_litellm
    from mmat.store import open_store

    started = time.monotonic()
    request = OptimizeRequest(program=program, optimizer=optimizer, out=Path(out), trainset_sql=trainset_sql,
                              valset_sql=valset_sql, auto=auto, trials=trials, max_demos=max_demos,
                              prompt_model=prompt_model)
    entry = request.check()
    model = role_model(settings, entry.role)
    configure_litellm(settings)
    for needed in {model, *([settings.verifier_model] if entry.needs_judge else []),
                   *([request.prompt_model or settings.teacher] if request.proposes else [])}:
        check_model(needed, settings)

    with open_store(settings) as store:
        sets = build_sets(store, program, settings=settings, trainset_sql=trainset_sql, valset_sql=valset_sql)
        opt_run_id = content_id("optimize", program, optimizer, model, utcnow().isoformat())
        try:
            with run_lifecycle(store, "optimize", settings, command, run_id=opt_run_id, progress=progress) as run:
                run.summary = {"program": program, "optimizer": optimizer}
                summary = _compile_and_save(store, settings, request, entry, sets, run, model, started, require_change)
                run.summary = summary.model_dump(mode="json")
                run.settings_update = {"compiled": {"path": str(summary.out), "sha256": summary.sha256}}
        finally:
            shutil.rmtree(settings.workspaces_dir / "optimize" / opt_run_id, ignore_errors=True)
    return summary


def _compile_and_save(store: Any, settings: Settings, request: OptimizeRequest, entry: ProgramEntry, sets: Sets, run: Any,
                      model: str, started: float, require_change: bool) -> OptimizeSummary:
    """Compile, refuse an unchanged result if asked, save the file and its ``optimization_runs`` row."""
    program, optimizer, opt_run_id = request.program, request.optimizer, run.run_id
    compiled, before, after, initial = _optimize(store, settings, request, entry, sets, opt_run_id, _Phase(run))
    unchanged = state_digest(compiled.program) == initial
    if unchanged and require_change:
        raise ConfigError(
            f"the compiled {program} equals the input program (no demos or instructions changed; metric "
            f"{before.mean:.3f} -> {after.mean:.3f}): nothing saved to {request.out}. Select more training "
            "examples (--trainset), or try --optimizer mipro or gepa")
    save_compiled(compiled.program, request.out, CompiledHeader(
        mmat_version=mmat.__version__, program=program, module=compiled.program._mmat_name,
        module_class=type(compiled.program).__name__, optimizer=optimizer, opt_run_id=opt_run_id,
        metric_before=before.mean, metric_after=after.mean,
    ))
    summary = OptimizeSummary(
        program=program, optimizer=optimizer, n_train=len(sets.train), n_val=len(sets.val),
        metric_before=before.mean, metric_after=after.mean, out=request.out.resolve(), opt_run_id=opt_run_id,
        val_from_train=sets.val_from_train, skipped=sets.skipped, seconds=time.monotonic() - started,
        unchanged=unchanged, sha256=sha256_file(request.out),
    )
    store.writer.put("optimization_runs", [_run_row(settings, request, model, sets, summary)])
    return summary
