"""`mmat synth --dry-run`: how many LM calls, and what cost, the requested run needs.

The estimate is the average of finished seeds of the same run (same run ID: models, tools, domains, k,
seed... — see ``SynthRequest.identity``). When the run has no finished seed yet, a **sample** is run first:
the run's first ``SAMPLE_SEEDS`` seeds, through the ordinary ``run_synth``, so their rows go to the store
as that run's first seeds (a later real run skips them, exactly as a resume does) and their replies are in
DSPy's cache (a redo would be served them). Per finished seed we count its ``lm_calls`` rows (each row
names its seed) and price the calls at the run's mean cost per request actually sent (cache hits cost
nothing and are not priced).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mmat.config import Settings

__all__ = ["SynthEstimate", "estimate_synth", "SAMPLE_SEEDS"]

SAMPLE_SEEDS = 2


class SynthEstimate(BaseModel):
    run_id: str
    seeds_total: int
    seeds_done: int
    sampled: int  # seeds run now for the estimate (0: the run's finished seeds were enough)
    calls_per_seed: float
    cost_per_call: float | None  # None: no priced request to go by
    seeds_left: int

    @property
    def calls_left(self) -> int:
        return round(self.calls_per_seed * self.seeds_left)

    @property
    def cost_left(self) -> float | None:
        return None if self.cost_per_call is None else self.calls_left * self.cost_per_call

    def render(self) -> str:
        source = (f"a sample of {self.sampled} seed(s) run now (stored as this run's first seeds; their replies are "
                  "cached, so the real run reuses them)" if self.sampled
                  else f"{self.seeds_done} finished seed(s) of this run")
        cost = ("cost unknown (no priced request yet)" if self.cost_left is None
                else f"about ${self.cost_left:.4f} (${self.cost_per_call:.6f} per call)")
        return (f"dry run {self.run_id}: {self.calls_per_seed:.1f} LM calls per seed, from {source}\n"
                f"{self.seeds_left} of {self.seeds_total} seed(s) still to do: about {self.calls_left} LM calls, {cost}\n"
                f"run it: the same command without --dry-run (add --max-calls N or --max-cost USD to cap it)")


def _done_seeds(store: Any, run_id: str) -> list[int]:
    return [r["seed_idx"] for r in store.sql(
        "SELECT seed_idx FROM synth_seeds WHERE run_id = ? AND status = 'done' ORDER BY 1", [run_id])]


def _per_seed(store: Any, run_id: str, done: list[int]) -> tuple[float, float | None]:
    """(LM calls per finished seed, mean cost per request sent) from the run's ``lm_calls``."""
    marks = ", ".join("?" for _ in done)
    calls = store.sql(f"SELECT count(*) AS n FROM lm_calls WHERE run_id = ? AND seed_idx IN ({marks})",
                      [run_id, *done])[0]["n"]
    sent = store.sql("SELECT sum(cost) AS cost, count(cost) AS priced FROM lm_calls "
                     "WHERE run_id = ? AND NOT coalesce(cache_hit, false)", [run_id])[0]
    cost_per_call = (sent["cost"] or 0.0) / sent["priced"] if sent["priced"] else None
    return calls / len(done), cost_per_call


def estimate_synth(settings: Settings, request: Any, *, command: str = "mmat synth --dry-run", progress: bool = True,
                   sample: int = SAMPLE_SEEDS) -> SynthEstimate:
    """Estimate ``request``'s LM calls and cost (running a sample of ``sample`` seeds first if needed)."""
    from mmat.pipeline.synth import run_synth
    from mmat.store import open_store
    from mmat.store import resumable_run_id

    run_id = resumable_run_id("synth", request.identity(settings), "synth")

    def done_now() -> list[int]:
        if not settings.db_path.exists():
            return []
        with open_store(settings, read_only=True) as store:
            return [i for i in _done_seeds(store, run_id) if i < request.tasks]

    sampled = 0
    done = done_now()
    if not done:
        sampled = min(sample, request.tasks)
        run_synth(settings, request.model_copy(update={"tasks": sampled}), command=command, progress=progress)
        done = done_now()
        if not done:
            from mmat.errors import ModelOutputError

            raise ModelOutputError(f"the {sampled} sample seed(s) of run {run_id} all failed: nothing to estimate "
                                   f"from (why: mmat sql \"select seed_idx, error from synth_seeds where run_id = "
                                   f"'{run_id}'\")")
    with open_store(settings, read_only=True) as store:
        per_seed, cost_per_call = _per_seed(store, run_id, done)
    return SynthEstimate(run_id=run_id, seeds_total=request.tasks, seeds_done=len(done), sampled=sampled,
                         calls_per_seed=per_seed, cost_per_call=cost_per_call, seeds_left=request.tasks - len(done))
