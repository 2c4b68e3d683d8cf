"""The papers' tables: each benchmark's figures in the column order its paper prints them.

* GTA, as GTA's evaluator reports end-to-end runs: P, O, L, C (tool F1 per category), AnsAcc, AnsAcc w/ ImgGen.
* GTA, as MAT and MATRIX report it: AnsAcc (MAT's substring rule, whitelist items), ToolAcc, CodeExec.
* GAIA: Level 1, Level 2, Level 3, Average (GAIA's leaderboard rule).
* Agent-X (MATRIX's table): G_s, T_p, T_acc, F_acc, C_s, F_p, S_acc, G_acc, G_a*, T^s_acc, and mmat's
  deterministic T^s_acc (set F1) after them.
Values are fractions in [0, 1] (None when a run lacks the figure); ``percent`` says how the papers print them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from mmat.eval.metrics import EvalMetrics

__all__ = ["PaperTable", "paper_tables"]


class PaperTable(BaseModel):
    name: str
    title: str
    columns: list[str]
    values: list[float | None]
    percent: bool = Field(description="The paper prints percentages (GTA, GAIA) rather than 0-1 scores (Agent-X).")
    notes: list[str] = Field(default_factory=list)


def _acc(metrics: EvalMetrics, scorer: str) -> float | None:
    acc = metrics.greedy.ans_acc.get(scorer)
    return acc.value if acc else None


def _gta_tables(m: EvalMetrics) -> list[PaperTable]:
    tables: list[PaperTable] = []
    g = m.gta
    if g is not None:
        f1 = [g.tool_f1[c].f1 if c in g.tool_f1 else None for c in ("perception", "operation", "logic", "creativity")]
        official = m.greedy.ans_acc.get("gta_official")
        notes = []
        if official is not None:
            notes.append(f"AnsAcc over {official.counted} items with an answer (objective + subjective)")
        notes.append(f"subjective answers scored with {g.embedding_model or 'no embedding model (none in this run)'}")
        if g.imggen_reason:
            notes.append(f"AnsAcc w/ ImgGen: {g.imggen_reason}")
        if g.dropped_code_gold:
            notes.append(f"L F1 leaves out {g.dropped_code_gold} gold Calculator/Solver/Plot calls (a code agent computes in Python)")
        tables.append(PaperTable(
            name="gta_official", title="GTA, as GTA's evaluator scores it (end-to-end)",
            columns=["P", "O", "L", "C", "AnsAcc", "AnsAcc w/ ImgGen"],
            values=[*f1, _acc(m, "gta_official"), g.ans_acc_with_imggen.value if g.ans_acc_with_imggen else None],
            percent=True, notes=notes,
        ))
    mat = m.greedy.ans_acc.get("mat")
    if mat is not None:
        notes = [f"AnsAcc: MAT's substring rule on {mat.counted} whitelist items"]
        if m.greedy.tool_empty_gold:
            notes.append(f"ToolAcc leaves out {m.greedy.tool_empty_gold} items with no reference tool")
        tables.append(PaperTable(
            name="gta_mat", title="GTA, as MAT and MATRIX report it",
            columns=["AnsAcc", "ToolAcc", "CodeExec"],
            values=[mat.value, m.greedy.tool_exact, m.greedy.code_exec], percent=True, notes=notes,
        ))
    return tables


def _gaia_table(m: EvalMetrics) -> PaperTable:
    levels = []
    for level in ("1", "2", "3"):
        group = m.by_level.get(level)
        acc = group.ans_acc.get("gaia") if group else None
        levels.append(acc.value if acc else None)
    overall = m.greedy.ans_acc.get("gaia")
    notes = [f"{overall.counted} items with a known answer" if overall else "no item with a known answer"]
    return PaperTable(name="gaia", title="GAIA (leaderboard rule)", columns=["Level 1", "Level 2", "Level 3", "Average"],
                      values=[*levels, overall.value if overall else None], percent=True, notes=notes)


def _agentx_table(m: EvalMetrics) -> PaperTable:
    ax = m.agentx
    assert ax is not None
    columns = ["G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "G_a*", "T^s_acc", "T^s_acc (set F1)"]
    keys = ["G_s", "T_p", "T_acc", "F_acc", "C_s", "F_p", "S_acc", "G_acc", "G_a*", "Ts_acc"]
    values = [ax.metrics[k].value for k in keys] + [ax.toolset_f1_set.value]
    notes = [f"judge: {ax.judge or 'none'}; G_acc over {ax.n_text} text-answer items, G_a* over {ax.n_generative} image-answer items"]
    dropped = {k: ax.metrics[k].dropped for k in keys if ax.metrics[k].dropped}
    if dropped:
        notes.append("unreadable judge replies dropped: " + ", ".join(f"{k} {n}" for k, n in dropped.items()))
    if ax.g_a_star_reason:
        notes.append(f"G_a*: {ax.g_a_star_reason}")
    return PaperTable(name="agentx", title="Agent-X (as MATRIX reports it)", columns=columns, values=values,
                      percent=False, notes=notes)


def paper_tables(metrics: EvalMetrics) -> list[PaperTable]:
    """The tables of the papers this run can be compared with."""
    if metrics.agentx is not None:
        return [_agentx_table(metrics)]
    if "gaia" in metrics.greedy.ans_acc or metrics.bench == "gaia":
        return [_gaia_table(metrics)]
    return _gta_tables(metrics)
