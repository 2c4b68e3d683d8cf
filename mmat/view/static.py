"""`mmat report --out DIR`: the run report as a folder that opens from disk (index.html, style.css, plots/*.svg)."""

from __future__ import annotations

from pathlib import Path

from mmat.pipeline.report import RunReport, stage_rates
from mmat.view.app import ASSETS, template_env

__all__ = ["write_report"]


def write_report(report: RunReport, out: Path) -> Path:
    """Write the report's HTML page, stylesheet and charts into ``out``; returns the index.html path."""
    from mmat.view.plots import report_plots

    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, svg in report_plots(report).items():
        (out / "plots" / f"{name}.svg").write_bytes(svg)
        plots[name] = f"plots/{name}.svg"
    (out / "style.css").write_text((ASSETS / "app.css").read_text(encoding="utf-8"), encoding="utf-8")
    html = template_env().get_template("report.html").render(static=True, report=report, plots=plots,
                                                               stage_rates=stage_rates(report), source=None, csrf="")
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    (out / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return index
