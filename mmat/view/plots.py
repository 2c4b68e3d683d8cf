"""The run report's charts as SVG, drawn server-side with matplotlib (no chart library in the browser).

Each chart comes back as ``(name, svg bytes)``; the app serves them as images by content id and the
static report writes them next to index.html, so the same bytes appear in both.
"""

from __future__ import annotations

import hashlib
import io
import threading

from mmat.pipeline.report import RunReport

__all__ = ["report_plots", "plot_id"]

_lock = threading.Lock()  # pyplot's state is global: draw one chart at a time
_BLUE, _GREEN, _GREY, _ORANGE = "#3b6fb6", "#3c9d5d", "#9aa3ad", "#d9822b"


def plot_id(svg: bytes) -> str:
    return hashlib.sha256(svg).hexdigest()[:32]


def _svg(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float = 6.0, height: float = 2.8):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "mmat"  # stable element ids: same report, same bytes
    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 0.2 trajectories
    return fig, ax


def _funnel(report: RunReport) -> bytes:
    fig, ax = _figure(6.0, 0.35 * len(report.stages) + 0.8)
    names = [s.stage for s in report.stages][::-1]
    values = [s.n for s in report.stages][::-1]
    ax.barh(names, values, color=_BLUE)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("count")
    return _svg(fig)


def _steps(report: RunReport) -> bytes:
    fig, ax = _figure()
    xs = [b.n_steps for b in report.step_histogram]
    ax.bar(xs, [b.trajectories for b in report.step_histogram], color=_GREY, label="all trajectories")
    ax.bar(xs, [b.kept for b in report.step_histogram], color=_GREEN, label="kept")
    ax.set_xlabel("steps per trajectory")
    ax.set_ylabel("trajectories")
    ax.set_xticks(xs)
    ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def _throughput(report: RunReport) -> bytes:
    fig, ax = _figure()
    xs = [b.start for b in report.throughput]
    for name, color in (("tasks", _BLUE), ("trajectories", _GREY), ("kept", _GREEN), ("lm_calls", _ORANGE)):
        ax.plot(xs, [getattr(b, name) for b in report.throughput], marker=".", color=color, label=name.replace("_", " "))
    ax.set_ylabel(f"per {report.bucket_s}s")
    ax.legend(frameon=False, fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


def _latency(report: RunReport) -> bytes:
    fig, ax = _figure(6.0, 0.4 * len(report.lm_usage) + 1.0)
    names = [f"{u.module} · {u.model}" for u in report.lm_usage][::-1]
    for key, color in (("latency_p99_ms", _ORANGE), ("latency_p90_ms", _GREY), ("latency_p50_ms", _BLUE)):
        ax.barh(names, [getattr(u, key) or 0 for u in report.lm_usage][::-1], color=color, label=key.split("_")[1])
    ax.set_xlabel("latency (ms)")
    ax.legend(frameon=False, fontsize=8)
    return _svg(fig)


def report_plots(report: RunReport) -> dict[str, bytes]:
    """Chart name -> SVG bytes, for the charts this report has data for."""
    charts = {"funnel": _funnel}
    if report.step_histogram:
        charts["steps"] = _steps
    if report.throughput:
        charts["throughput"] = _throughput
    if report.lm_usage:
        charts["latency"] = _latency
    with _lock:
        return {name: draw(report) for name, draw in charts.items()}
