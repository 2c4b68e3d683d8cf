"""Offline tool backends: latency per call through WorkspaceToolHost, and OCR accuracy on rendered text.

Measures, on this machine, with every input made here (rendered text, scikit-image sample photos,
documents written with python-docx/openpyxl/fpdf2):
- first-call cost (model/engine load) and p50/p95 of later calls for ocr, facedetection, GrabCut
  segmentation, the derived visualizer (no text model: facts only), inspect_file_as_text and
  bm25 search (plus its index build);
- OCR line accuracy: rendered lines read back exactly (case and spacing as rendered).

    python bench/tools_offline.py                 # appends a dated section to bench/RESULTS.md
    python bench/tools_offline.py --no-results    # print only

The lm-driven tools (image_edit, image_generator, simulated search) are not timed here: their cost
is the text model's, which the model benchmarks measure.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).with_name("RESULTS.md")

OCR_LINES = [
    "Invoice total 42.50 EUR",
    "Meeting room B12 at noon",
    "Platform 7 departs 14:35",
    "Call 555-0147 after 6 pm",
    "Best before 2027-03-31",
    "Net weight 250 g",
    "Gate closes 20 minutes early",
    "Room 4.018 is on level four",
    "Open daily from 9 to 17",
    "Order number A-99213",
    "Keep refrigerated below 5 C",
    "Total distance 12.6 km",
]


def _text_image(lines: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (760, 70 * len(lines) + 20), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=30)
    for i, line in enumerate(lines):
        draw.text((24, 20 + 70 * i), line, fill="black", font=font)
    return img


def _inputs(ws: Path) -> None:
    import docx
    from PIL import Image
    from skimage import data

    _text_image(OCR_LINES[:3]).save(ws / "note.png")
    _text_image(OCR_LINES).save(ws / "page.png")
    Image.fromarray(data.astronaut()).save(ws / "astronaut.png")
    doc = docx.Document()
    doc.add_heading("Report", 1)
    for i in range(40):
        doc.add_paragraph(f"Paragraph {i}: revenue in region {i} grew by {i % 7} percent.")
    doc.save(ws / "report.docx")


def _time(fn, n: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1000
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return first, runs


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("-n", type=int, default=10, help="timed calls per tool after the first")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MMAT_HOME"] = str(Path(tmp) / "home")
        from mmat.config import load_settings
        from mmat.tools import WorkspaceToolHost

        ws = Path(tmp) / "ws"
        ws.mkdir()
        _inputs(ws)
        settings = load_settings()
        settings.ensure_dirs()
        host = WorkspaceToolHost(settings, ws)
        cases = [
            ("ocr (3 lines, 760x230)", "ocr", {"image_path": "note.png"}),
            ("facedetection (512x512)", "facedetection", {"image_path": "astronaut.png"}),
            ("segmentation, GrabCut (512x512)", "segmentation", {"image_path": "astronaut.png", "prompt": "[150, 40, 330, 300]"}),
            ("visualizer, derived, no lm (512x512)", "visualizer", {"question": "Describe it.", "image_path": "astronaut.png"}),
            ("inspect_file_as_text (docx, 40 paragraphs)", "inspect_file_as_text", {"file_path": "report.docx"}),
            ("ask_search_agent, bm25 (bundled corpus)", "ask_search_agent", {"query": "boiling point of water at altitude"}),
        ]
        rows = []
        for label, name, kwargs in cases:
            first, runs = _time(lambda: host.call(name, kwargs), args.n)
            rows.append((label, first, statistics.median(runs), _p95(runs)))
            print(f"{label:45s} first {first:8.1f} ms  p50 {rows[-1][2]:8.1f} ms  p95 {rows[-1][3]:8.1f} ms")

        from mmat.tools.search_index import BUNDLED_CORPUS, CorpusIndex

        t0 = time.perf_counter()
        index = CorpusIndex(BUNDLED_CORPUS)
        build_ms = (time.perf_counter() - t0) * 1000
        print(f"bm25 index build: {build_ms:.1f} ms for {len(index.passages)} passages")

        out = host.call("ocr", {"image_path": "page.png"})
        read = [line.split("] ", 1)[1] for line in out.splitlines()[1:]]
        exact = sum(1 for want, got in zip(OCR_LINES, read) if want == got)
        print(f"OCR exact lines: {exact}/{len(OCR_LINES)} (read {len(read)} lines)")

    if args.no_results:
        return
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        f"\n## Offline tool backends ({stamp})\n",
        f"`python bench/tools_offline.py` on {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load avg {load:.1f}. Calls go through `WorkspaceToolHost.call` (path checks, "
        f"image decoding, result text); {args.n} timed calls after the first (which includes engine loads).\n",
        "| tool call | first ms | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
        *[f"| {label} | {first:.1f} | {p50:.1f} | {p95:.1f} |" for label, first, p50, p95 in rows],
        "",
        f"bm25 index build over the bundled corpus: {build_ms:.1f} ms ({len(index.passages)} passages). "
        f"OCR on 12 rendered lines: {exact}/12 read exactly.",
        "",
    ]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
