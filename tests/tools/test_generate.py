"""image_generator offline: a typed chart spec (scripted) rendered by matplotlib."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmat.signatures.tools import ChartSpec
from mmat.tools import ToolError, ToolUnavailableError
from mmat.tools.generate import render_chart

BAR = {
    "chart_type": "bar", "title": "Rainfall", "x_label": "Month", "y_label": "mm",
    "categories": ["Jan", "Feb", "Mar"], "series": [{"name": "2024", "values": [80, 55, 62]}],
}


def test_bar_chart_from_the_models_spec(make_host, scripted_lm, workspace):
    dummy, lm = scripted_lm([{"chart": BAR}])
    out = make_host(lm=lm).call("image_generator", {"prompt": "A bar chart of rainfall: Jan 80, Feb 55, Mar 62 mm"})
    assert out == (
        "Saved generated image to generated_1.png: bar chart, 1 series x 3 points, titled 'Rainfall' (drawn with matplotlib)."
    )
    img = np.asarray(Image.open(workspace / "generated_1.png").convert("RGB"))
    assert img.shape == (500, 800, 3)
    assert (np.abs(img.astype(int) - (31, 119, 180)).sum(axis=2) < 30).sum() > 5000  # matplotlib's blue bars
    assert "Jan 80, Feb 55, Mar 62" in str(dummy.calls[0].messages)


@pytest.mark.parametrize("chart_type", ["bar", "horizontal_bar", "line", "scatter", "pie"])
def test_every_chart_type_renders(tmp_path, chart_type):
    spec = ChartSpec(**{**BAR, "chart_type": chart_type,
                        "series": [{"name": "a", "values": [1, 2, 3]}, {"name": "b", "values": [3, 1, 2]}]})
    out = tmp_path / "c.png"
    drawn = render_chart(spec, out)
    assert drawn.startswith(chart_type.replace("_", " ")) and Image.open(out).size == (800, 500)


def test_flowchart_and_numeric_x(tmp_path):
    flow = ChartSpec(chart_type="flowchart", title="Make tea", x_label="", y_label="",
                     categories=["Boil water", "Add leaves", "Steep 3 min", "Pour", "Drink"], series=[])
    assert render_chart(flow, tmp_path / "f.png") == "flowchart of 5 steps"
    line = ChartSpec(chart_type="line", title="t", x_label="year", y_label="n",
                     categories=["2020", "2021", "2022", "2023"], series=[{"name": "n", "values": [1, 4, 9]}])
    assert render_chart(line, tmp_path / "l.png") == "line chart, 1 series x 3 points"  # shortest length wins


def test_a_chart_without_data_is_the_models_error(make_host, scripted_lm, workspace):
    _, lm = scripted_lm([{"chart": {**BAR, "series": []}}])
    with pytest.raises(ToolError, match="the chart has no data"):
        make_host(lm=lm).call("image_generator", {"prompt": "a chart"})
    assert not list(workspace.glob("generated_*.png"))  # the reserved name is released


def test_without_a_text_model_the_generator_is_unavailable(make_host):
    with pytest.raises(ToolUnavailableError, match="diffusers: diffusers is not installed.*matplotlib-chart: needs a text model"):
        make_host(names=["image_generator"]).call("image_generator", {"prompt": "a cat"})
