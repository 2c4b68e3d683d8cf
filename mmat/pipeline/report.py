"""The run report: what a run made and what it cost, computed once from the store.

One function, :func:`build_report`, reads every figure (stage counts and top rejection reasons with
rule checks and LM verifiers apart, domains, tool combinations, step counts, answer types,
near-duplicates, 13-gram overlap with benchmark files, LM usage per module and model, cost per kept
trajectory, throughput over time) into a :class:`RunReport`. `mmat report` prints it
(:meth:`RunReport.render`), `mmat report --out` and `mmat view` draw the same object as HTML.

"Kept" means a trajectory whose stored verdict is ``correct``. Only the newest verdict per subject and
verifier counts (`mmat verify` adds rows, it never replaces them). Reasons are read generically (a JSON
list of strings or objects, a string); a rule check's reason ``"<check>: <why>"`` is grouped by check.
Deterministic verifiers (``rules``, ``expected_answer``, anything not an LM verifier or a label) are
counted apart from the LM verifiers.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from mmat.errors import ConfigError, StoreError
from mmat.store.columns import from_json_text

__all__ = ["RunReport", "build_report", "default_run_id", "reason_texts", "normalize_reason", "TOP_REASONS"]

TOP_REASONS = 8
LM_VERIFIERS = ("query_file", "trajectory")
LABEL_VERIFIER = "label"
_CHECK = re.compile(r"^([a-z][a-z0-9_]*): (.+)$", re.S)
# The newest verdict per subject and verifier.
_LATEST = ("(SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY subject_kind, subject_id, verifier "
           "ORDER BY created_at DESC NULLS LAST, verdict_id DESC) = 1)")
_BUCKETS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 86400)
_MAX_BUCKETS = 40
_DIGITS = re.compile(r"\d+")
_DEFAULT_DEDUP = 0.92


class Count(BaseModel):
    name: str
    n: int
    example: str | None = None  # a rule check's most common reason text


class Stage(BaseModel):
    stage: str
    n: int
    of: str = ""  # what the count is a subset of, for the rate column


class VerdictRate(BaseModel):
    verifier: str
    subject_kind: str
    n: int
    passed: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.n if self.n else None


class DomainRow(BaseModel):
    domain: str
    tasks: int
    kept: int


class StepBin(BaseModel):
    n_steps: int
    trajectories: int
    kept: int


class NearDuplicates(BaseModel):
    specs: int
    rejected_as_duplicate: int
    accepted: int
    accepted_with_neighbour: int  # accepted queries whose embedding has another accepted one above the threshold
    threshold: float

    @property
    def rejected_rate(self) -> float | None:
        return self.rejected_as_duplicate / self.specs if self.specs else None

    @property
    def accepted_rate(self) -> float | None:
        return self.accepted_with_neighbour / self.accepted if self.accepted else None


class Overlap(BaseModel):
    bench: str
    bench_queries: int
    queries: int
    overlapping: int
    kept_overlapping: int

    @property
    def rate(self) -> float | None:
        return self.overlapping / self.queries if self.queries else None


class LMUsage(BaseModel):
    module: str
    model: str
    calls: int
    errors: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None


class TimeBucket(BaseModel):
    start: datetime
    tasks: int
    trajectories: int
    kept: int
    lm_calls: int


class RunReport(BaseModel):
    run_id: str
    kind: str
    status: str | None
    command: str | None
    started_at: datetime | None
    finished_at: datetime | None
    settings: dict[str, Any]
    stages: list[Stage]
    task_rejections: list[Count]
    rule_rejections: list[Count]
    lm_rejections: list[Count]
    verdict_rates: list[VerdictRate]
    domains: list[DomainRow]
    tool_combinations: list[Count]
    step_histogram: list[StepBin]
    answer_types: list[Count]
    near_duplicates: NearDuplicates
    overlaps: list[Overlap]
    lm_usage: list[LMUsage]
    kept: int
    total_cost: float
    bucket_s: int
    throughput: list[TimeBucket]

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def cost_per_kept(self) -> float | None:
        return self.total_cost / self.kept if self.kept else None

    @property
    def lm_calls(self) -> int:
        return sum(u.calls for u in self.lm_usage)

    def render(self, width: int = 110) -> str:
        """The report as terminal text (rich tables)."""
        return _render_text(self, width)


# --- reading -------------------------------------------------------------------------------------------------
def default_run_id(store) -> str:
    """The newest synthesis run (demo or synth), else the newest run of any kind."""
    rows = store.sql("SELECT run_id FROM runs ORDER BY (kind IN ('synth', 'demo')) DESC, started_at DESC NULLS LAST LIMIT 1")
    if not rows:
        raise StoreError("the store has no runs yet: run `mmat demo` or `mmat synth` first")
    return rows[0]["run_id"]


def _run_row(store, run_id: str) -> dict[str, Any]:
    rows = store.sql("SELECT run_id, kind, status, command, settings, started_at, finished_at FROM runs WHERE run_id = ?", [run_id])
    if rows:
        return rows[0]
    rows = store.sql("SELECT eval_run_id AS run_id, 'eval' AS kind, 'done' AS status, NULL AS command, settings, "
                     "created_at AS started_at, NULL AS finished_at FROM eval_runs WHERE eval_run_id = ?", [run_id])
    if rows:
        return rows[0]
    raise ConfigError(f"no run {run_id!r} in the store: list the runs with `mmat runs`")


def reason_texts(reasons: Any) -> list[str]:
    """The reasons of a verdict row as strings, whatever shape the verifier stored them in."""
    value = from_json_text(reasons)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        for key in ("reason", "message", "check", "name"):
            if isinstance(value.get(key), str):
                return [value[key]]
        return [json.dumps(value, sort_keys=True)]
    if isinstance(value, list):
        return [text for item in value for text in reason_texts(item)]
    return [str(value)]


def normalize_reason(text: str, limit: int = 120) -> str:
    """Reasons that differ only in numbers (counts, file indices) group together."""
    text = " ".join(_DIGITS.sub("#", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _top(counter: Counter, n: int = TOP_REASONS) -> list[Count]:
    return [Count(name=k, n=v) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _scalar(store, query: str, params: Sequence[Any]) -> int:
    return int(store.sql(query, list(params))[0]["n"] or 0)


def _stages(store, run_id: str) -> list[Stage]:
    tasks = "FROM tasks WHERE run_id = ?"
    trajs = "FROM trajectories t WHERE t.run_id = ?"
    count = lambda q: _scalar(store, f"SELECT count(*) AS n {q}", [run_id])  # noqa: E731
    latest = lambda kind, verifier, cond: (  # noqa: E731
        f"(SELECT subject_id FROM {_LATEST} WHERE subject_kind = '{kind}' AND verifier = '{verifier}' AND {cond})")
    stages = [
        Stage(stage="task specs written", n=count(tasks)),
        Stage(stage="specs accepted", n=count(tasks + " AND intended_tools IS NOT NULL"), of="task specs written"),
        Stage(stage="files made", n=count(tasks + " AND intended_tools IS NOT NULL AND coalesce(status_reason, '') NOT LIKE 'files:%'"
                                         " AND status NOT IN ('generated')"), of="specs accepted"),
    ]
    files_made = " AND intended_tools IS NOT NULL AND coalesce(status_reason, '') NOT LIKE 'files:%'"
    if count(tasks + " AND task_id IN " + latest("task", "rules", "TRUE")):
        stages.append(Stage(stage="passed task rule checks", of="files made", n=count(
            tasks + files_made + " AND task_id NOT IN " + latest("task", "rules", "NOT passed"))))
    stages += [
        Stage(stage="query-file verified", n=count(tasks + " AND task_id IN " + latest("task", "query_file", "passed")),
              of="files made"),
        Stage(stage="trajectories", n=count(trajs)),
    ]
    if count(trajs + " AND traj_id IN " + latest("trajectory", "rules", "TRUE")):
        stages.append(Stage(stage="passed rule checks", of="trajectories", n=count(
            trajs + " AND traj_id NOT IN " + latest("trajectory", "rules", "NOT passed"))))
    stages += [
        Stage(stage="passed LM verifier", of="trajectories", n=count(
            trajs + " AND traj_id IN " + latest("trajectory", "trajectory", "passed"))),
        Stage(stage="kept (verdict correct)", of="trajectories", n=count(trajs + " AND t.verdict = 'correct'")),
        Stage(stage="tasks solved", of="query-file verified", n=count(tasks + " AND status = 'solved'")),
    ]
    return stages


def _verdict_rows(store, run_id: str) -> list[dict[str, Any]]:
    return store.sql(
        f"SELECT v.verifier, v.subject_kind, v.passed, v.verdict, v.reasons FROM {_LATEST} v WHERE "
        "(v.subject_kind = 'task' AND v.subject_id IN (SELECT task_id FROM tasks WHERE run_id = ?)) OR "
        "(v.subject_kind = 'trajectory' AND v.subject_id IN (SELECT traj_id FROM trajectories WHERE run_id = ?))",
        [run_id, run_id])


def _rejections(verdicts: list[dict[str, Any]]) -> tuple[list[Count], list[Count]]:
    """Top failure reasons of deterministic checks (grouped by check name) and of the LM verifiers."""
    checks, examples, lm = Counter(), {}, Counter()
    for v in verdicts:
        if v["passed"] is not False or v["verifier"] == LABEL_VERIFIER:
            continue
        texts = reason_texts(v["reasons"]) or [v["verdict"] or "(no reason given)"]
        if v["verifier"] in LM_VERIFIERS:
            lm.update(f"{v['verifier']}: {normalize_reason(t)}" for t in texts)
            continue
        for text in texts:
            match = _CHECK.match(text.strip())
            name, why = (match.group(1), match.group(2)) if match else (normalize_reason(text), None)
            if v["verifier"] != "rules":
                name = f"{v['verifier']}: {name}"
            checks[name] += 1
            if why:
                examples.setdefault(name, Counter())[normalize_reason(why)] += 1
    top_checks = [Count(name=c.name, n=c.n, example=examples[c.name].most_common(1)[0][0] if c.name in examples else None)
                  for c in _top(checks)]
    return top_checks, _top(lm)


def _verdict_rates(verdicts: list[dict[str, Any]]) -> list[VerdictRate]:
    n, passed = Counter(), Counter()
    for v in verdicts:
        key = (v["verifier"] or "?", v["subject_kind"] or "?")
        n[key] += 1
        passed[key] += int(bool(v["passed"]))
    return [VerdictRate(verifier=k[0], subject_kind=k[1], n=n[k], passed=passed[k]) for k in sorted(n)]


def _tool_combinations(store, run_id: str) -> list[Count]:
    from mmat.tools import is_final

    rows = store.sql("SELECT s.traj_id, s.tool_calls FROM steps s JOIN trajectories t USING (traj_id) WHERE t.run_id = ?", [run_id])
    used: dict[str, set[str]] = {r["traj_id"]: set() for r in store.sql("SELECT traj_id FROM trajectories WHERE run_id = ?", [run_id])}
    for r in rows:
        used.setdefault(r["traj_id"], set()).update(
            c["name"] for c in (r["tool_calls"] or []) if c.get("name") and not is_final(c["name"]))
    return _top(Counter(" + ".join(sorted(names)) or "(no tool)" for names in used.values()), 12)


def _step_histogram(store, run_id: str) -> list[StepBin]:
    rows = store.sql("SELECT coalesce(n_steps, 0) AS n_steps, count(*) AS n, count(*) FILTER (WHERE verdict = 'correct') AS kept "
                     "FROM trajectories WHERE run_id = ? GROUP BY 1 ORDER BY 1", [run_id])
    return [StepBin(n_steps=r["n_steps"], trajectories=r["n"], kept=r["kept"]) for r in rows]


def _near_duplicates(store, run_id: str, threshold: float) -> NearDuplicates:
    counts = store.sql(
        "SELECT count(*) AS specs, count(*) FILTER (WHERE status = 'rejected' AND status_reason ILIKE '%duplicate%') AS dup, "
        "count(*) FILTER (WHERE intended_tools IS NOT NULL) AS accepted FROM tasks WHERE run_id = ?", [run_id])[0]
    rows = store.sql("SELECT e.embedding FROM query_embeddings e JOIN tasks k USING (task_id) "
                     "WHERE k.run_id = ? AND k.intended_tools IS NOT NULL", [run_id])
    with_neighbour = 0
    if len(rows) > 1:
        vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -1.0)
        with_neighbour = int((similarity.max(axis=1) >= threshold).sum())
    return NearDuplicates(specs=counts["specs"], rejected_as_duplicate=counts["dup"], accepted=counts["accepted"],
                          accepted_with_neighbour=with_neighbour, threshold=threshold)


def _overlaps(store, run_id: str, benches: Iterable[Path]) -> list[Overlap]:
    from mmat.decontam import NgramIndex
    from mmat.eval import load_bench

    queries = store.sql("SELECT k.query, bool_or(t.verdict = 'correct') AS kept FROM tasks k LEFT JOIN trajectories t USING (task_id) "
                        "WHERE k.run_id = ? AND k.query IS NOT NULL GROUP BY k.task_id, k.query", [run_id])
    out = []
    for path in benches:
        path = Path(path)
        kind = "gaia" if path.suffix == ".jsonl" else "gta"
        index = NgramIndex(item.question for item in load_bench(kind, path).items)
        hits = [q for q in queries if index.contaminated(q["query"])]
        out.append(Overlap(bench=str(path), bench_queries=index.n_texts, queries=len(queries), overlapping=len(hits),
                           kept_overlapping=sum(1 for q in hits if q["kept"])))
    return out


def _lm_usage(store, run_id: str) -> list[LMUsage]:
    rows = store.sql(
        "SELECT coalesce(module, '?') AS module, coalesce(model, '?') AS model, count(*) AS calls, "
        "count(*) FILTER (WHERE error IS NOT NULL) AS errors, count(*) FILTER (WHERE cache_hit) AS cache_hits, "
        # sums cast to BIGINT: DuckDB sums INTEGERs as HUGEINT, which the writer's read socket returns as raw bytes
        "CAST(coalesce(sum(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, "
        "CAST(coalesce(sum(completion_tokens), 0) AS BIGINT) AS completion_tokens, "
        "coalesce(sum(cost), 0) AS cost, quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.9) AS p90, "
        "quantile_cont(latency_ms, 0.99) AS p99 FROM lm_calls WHERE run_id = ? GROUP BY ALL ORDER BY 1, 2", [run_id])
    return [LMUsage(module=r["module"], model=r["model"], calls=r["calls"], errors=r["errors"], cache_hits=r["cache_hits"],
                    prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"], cost=float(r["cost"]),
                    latency_p50_ms=r["p50"], latency_p90_ms=r["p90"], latency_p99_ms=r["p99"]) for r in rows]


def _bucket_seconds(span_s: float) -> int:
    for size in _BUCKETS_S:
        if span_s / size <= _MAX_BUCKETS:
            return size
    return int(span_s / _MAX_BUCKETS) + 1


def _throughput(store, run_id: str) -> tuple[int, list[TimeBucket]]:
    series = {
        "tasks": store.sql("SELECT created_at AS at FROM tasks WHERE run_id = ? AND created_at IS NOT NULL", [run_id]),
        "trajectories": store.sql("SELECT created_at AS at FROM trajectories WHERE run_id = ? AND created_at IS NOT NULL", [run_id]),
        "kept": store.sql("SELECT created_at AS at FROM trajectories WHERE run_id = ? AND verdict = 'correct' AND created_at IS NOT NULL", [run_id]),
        "lm_calls": store.sql("SELECT started_at AS at FROM lm_calls WHERE run_id = ? AND started_at IS NOT NULL", [run_id]),
    }
    times = [r["at"] for rows in series.values() for r in rows]
    if not times:
        return 0, []
    first, last = min(times), max(times)
    size = _bucket_seconds((last - first).total_seconds())
    n = int((last - first).total_seconds() // size) + 1
    counts = {name: [0] * n for name in series}
    for name, rows in series.items():
        for r in rows:
            counts[name][int((r["at"] - first).total_seconds() // size)] += 1
    return size, [TimeBucket(start=first + timedelta(seconds=i * size), **{k: v[i] for k, v in counts.items()}) for i in range(n)]


def build_report(store, run_id: str | None = None, *, benches: Sequence[Path] = ()) -> RunReport:
    """Every figure of one run's report (default: the newest synthesis run)."""
    run_id = run_id or default_run_id(store)
    run = _run_row(store, run_id)
    settings = from_json_text(run["settings"]) or {}
    settings = settings if isinstance(settings, dict) else {}
    verdicts = _verdict_rows(store, run_id)
    rules, lm = _rejections(verdicts)
    task_reasons = Counter(normalize_reason(r["status_reason"]) for r in store.sql(
        "SELECT status_reason FROM tasks WHERE run_id = ? AND status IN ('rejected', 'failed') AND status_reason IS NOT NULL", [run_id]))
    domains = store.sql(
        "SELECT coalesce(k.domain, '?') AS domain, count(DISTINCT k.task_id) AS tasks, "
        "count(DISTINCT t.traj_id) FILTER (WHERE t.verdict = 'correct') AS kept "
        "FROM tasks k LEFT JOIN trajectories t USING (task_id) WHERE k.run_id = ? GROUP BY 1 ORDER BY 2 DESC, 1", [run_id])
    answer_types = store.sql("SELECT coalesce(answer_type, '(unset)') AS name, count(*) AS n FROM tasks "
                             "WHERE run_id = ? AND intended_tools IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1", [run_id])
    kept = _scalar(store, "SELECT count(*) AS n FROM trajectories WHERE run_id = ? AND verdict = 'correct'", [run_id])
    usage = _lm_usage(store, run_id)
    bucket_s, throughput = _throughput(store, run_id)
    threshold = settings.get("dedup_threshold", _DEFAULT_DEDUP)
    return RunReport(
        run_id=run_id, kind=run["kind"], status=run["status"], command=run["command"], started_at=run["started_at"],
        finished_at=run["finished_at"], settings=settings, stages=_stages(store, run_id), task_rejections=_top(task_reasons),
        rule_rejections=rules, lm_rejections=lm, verdict_rates=_verdict_rates(verdicts),
        domains=[DomainRow(**r) for r in domains], tool_combinations=_tool_combinations(store, run_id),
        step_histogram=_step_histogram(store, run_id), answer_types=[Count(**r) for r in answer_types],
        near_duplicates=_near_duplicates(store, run_id, float(threshold)), overlaps=_overlaps(store, run_id, benches),
        lm_usage=usage, kept=kept, total_cost=sum(u.cost for u in usage), bucket_s=bucket_s, throughput=throughput,
    )


# --- terminal text -------------------------------------------------------------------------------------------
def pct(part: float | None, whole: float | None = None) -> str:
    value = part if whole is None else (part / whole if whole else None)
    return "–" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def stage_rates(report: RunReport) -> list[tuple[Stage, str]]:
    """Each stage with its share of the stage it is a subset of."""
    by_name = {s.stage: s.n for s in report.stages}
    return [(s, pct(s.n, by_name.get(s.of)) if s.of else "") for s in report.stages]


def _render_text(report: RunReport, width: int) -> str:
    from rich.console import Console
    from rich.table import Table

    def table(title: str, *columns: str) -> Table:
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 else "right")
        return t

    def counts(title: str, rows: list[Count], label: str) -> Table | str:
        if not rows:
            return f"{title}: none"
        t = table(title, label, "n")
        for r in rows:
            t.add_row(r.name + (f" (e.g. {r.example})" if r.example else ""), str(r.n))
        return t

    duration = f"{report.duration_s:.0f}s" if report.duration_s is not None else "–"
    head = (f"run {report.run_id} ({report.kind}, {report.status or '?'}, {duration})"
            + (f"\n  {report.command}" if report.command else ""))
    stages = table("stages", "stage", "n", "rate")
    for stage, rate in stage_rates(report):
        stages.add_row(stage.stage, str(stage.n), rate)
    rates = table("verdicts", "verifier", "subject", "n", "passed", "rate")
    for v in report.verdict_rates:
        rates.add_row(v.verifier, v.subject_kind, str(v.n), str(v.passed), pct(v.rate))
    domains = table("domains", "domain", "tasks", "kept")
    for d in report.domains:
        domains.add_row(d.domain, str(d.tasks), str(d.kept))
    steps = table("steps per trajectory", "steps", "trajectories", "kept")
    for b in report.step_histogram:
        steps.add_row(str(b.n_steps), str(b.trajectories), str(b.kept))
    nd = report.near_duplicates
    dup = (f"near-duplicates: {nd.rejected_as_duplicate} of {nd.specs} specs rejected as duplicates ({pct(nd.rejected_rate)}); "
           f"{nd.accepted_with_neighbour} of {nd.accepted} accepted queries have a neighbour with cosine >= {nd.threshold:g} "
           f"({pct(nd.accepted_rate)})")
    overlap = "\n".join(f"13-gram overlap with {o.bench}: {o.overlapping} of {o.queries} queries ({pct(o.rate)}), "
                        f"{o.kept_overlapping} of them kept" for o in report.overlaps) or "13-gram overlap: no benchmark given (--bench FILE)"
    lm = table("LM calls", "module", "model", "calls", "errors", "cached", "prompt tok", "compl tok", "cost $", "p50 ms", "p90 ms", "p99 ms")
    for u in report.lm_usage:
        lm.add_row(u.module, u.model, str(u.calls), str(u.errors), str(u.cache_hits), f"{u.prompt_tokens:,}",
                   f"{u.completion_tokens:,}", f"{u.cost:.4f}", _ms(u.latency_p50_ms), _ms(u.latency_p90_ms), _ms(u.latency_p99_ms))
    per_kept = f"${report.cost_per_kept:.4f}" if report.cost_per_kept is not None else "– (nothing kept)"
    cost = f"LM cost: ${report.total_cost:.4f} over {report.lm_calls} calls; per kept trajectory: {per_kept}"
    through = "throughput: no timestamps"
    if report.throughput:
        peak = max(report.throughput, key=lambda b: b.trajectories)
        through = (f"throughput: {sum(b.trajectories for b in report.throughput)} trajectories in {len(report.throughput)} "
                   f"bucket(s) of {report.bucket_s}s; peak {peak.trajectories} at {peak.start:%Y-%m-%d %H:%M:%S}")
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for part in (head, stages, counts("top task rejections", report.task_rejections, "reason"),
                 counts("top rule-check failures (verifier = rules)", report.rule_rejections, "reason"),
                 counts("top LM-verifier rejections", report.lm_rejections, "reason"), rates, domains,
                 counts("tool combinations (tools called per trajectory)", report.tool_combinations, "tools"), steps,
                 counts("answer types", report.answer_types, "type"), dup, overlap, lm, cost, through):
        console.print(part)
    return buffer.getvalue()
