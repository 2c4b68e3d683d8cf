"""inspect_file_as_text on documents written in the test with python-docx, openpyxl, fpdf2 and python-pptx."""

from __future__ import annotations

import json
import wave
import zipfile

import pytest

from mmat.tools import ToolArgumentError, ToolUnavailableError
from mmat.tools.documents import MAX_TEXT_CHARS


def _read(host, name, question=None):
    kwargs = {"file_path": name} if question is None else {"file_path": name, "question": question}
    return host.call("inspect_file_as_text", kwargs)


def test_docx(make_host, workspace):
    import docx

    doc = docx.Document()
    doc.add_heading("Quarterly report", level=1)
    doc.add_paragraph("Revenue grew to 1.2 million euros in the third quarter.")
    table = doc.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "340"
    doc.save(workspace / "report.docx")
    out = _read(make_host(), "report.docx")
    assert out.startswith("Content of 'report.docx' (docx as markdown):")
    assert "# Quarterly report" in out and "1.2 million euros" in out and "| North | 340 |" in out


def test_xlsx_one_table_per_sheet(make_host, workspace):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Prices"
    ws.append(["Item", "Price"])
    ws.append(["Coffee", 3.5])
    ws.append(["Tea", 2.75])
    wb.create_sheet("Stock").append(["Beans", 12])
    wb.save(workspace / "shop.xlsx")
    out = _read(make_host(), "shop.xlsx")
    assert "## Prices" in out and "| Coffee | 3.50 |" in out and "## Stock" in out and "Beans" in out


def test_pdf(make_host, workspace):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(0, 10, "Train 4512 leaves Platform 7 at 14:35.")
    pdf.output(str(workspace / "ticket.pdf"))
    assert "Train 4512 leaves Platform 7 at 14:35." in _read(make_host(), "ticket.pdf")


def test_pptx_with_notes(make_host, workspace):
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Launch plan"
    slide.placeholders[1].text = "Beta opens on 3 March"
    slide.notes_slide.notes_text_frame.text = "Mention the waiting list"
    slide.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1)).text_frame.text = "Budget 5000"
    prs.save(workspace / "plan.pptx")
    out = _read(make_host(), "plan.pptx")
    assert "Launch plan" in out and "Beta opens on 3 March" in out and "Mention the waiting list" in out and "Budget 5000" in out


def test_text_formats_and_zip(make_host, workspace):
    (workspace / "data.csv").write_text("city,population\nLyon,522000\n")
    (workspace / "page.html").write_text("<html><body><h1>Opening hours</h1><p>Mon-Fri 9-17</p></body></html>")
    (workspace / "cfg.json").write_text(json.dumps({"threshold": 0.75}))
    (workspace / "script.py").write_text("def area(r):\n    return 3.14159 * r * r\n")
    with zipfile.ZipFile(workspace / "bundle.zip", "w") as z:
        z.writestr("inner/readme.txt", "The password hint is blue whale.")
    host = make_host()
    assert "| Lyon | 522000 |" in _read(host, "data.csv")
    assert "# Opening hours" in _read(host, "page.html") and "Mon-Fri 9-17" in _read(host, "page.html")
    assert '"threshold": 0.75' in _read(host, "cfg.json")
    assert "return 3.14159 * r * r" in _read(host, "script.py")
    assert "blue whale" in _read(host, "bundle.zip")


def test_long_text_is_truncated_with_a_note(make_host, workspace):
    (workspace / "long.txt").write_text("word " * 9_999 + "last.")  # 50,000 characters
    out = _read(make_host(), "long.txt")
    assert out.endswith(f"[truncated: showing the first {MAX_TEXT_CHARS:,} of 50,000 characters]")
    assert len(out) < MAX_TEXT_CHARS + 200


def test_question_answered_by_the_text_model(make_host, scripted_lm, workspace):
    (workspace / "menu.md").write_text("# Menu\n\n- Soup of the day: 6.50\n- Lasagne: 12.00\n")
    dummy, lm = scripted_lm([{"answer": "The lasagne costs 12.00."}])
    out = _read(make_host(lm=lm), "menu.md", question="How much is the lasagne?")
    assert out == "Answer from 'menu.md': The lasagne costs 12.00."
    sent = str(dummy.calls[0].messages)
    assert "Lasagne: 12.00" in sent and "How much is the lasagne?" in sent


def test_question_without_a_model_returns_the_text(make_host, workspace):
    (workspace / "a.txt").write_text("The gate code is 4411.")
    out = _read(make_host(), "a.txt", question="What is the gate code?")
    assert out.startswith("(no model is available to answer the question here; the text follows)")
    assert "The gate code is 4411." in out


def test_images_corrupt_files_and_audio_are_refused_clearly(make_host, workspace, text_image):
    host = make_host()
    with pytest.raises(ToolArgumentError, match="'note.png' is an image; use visualizer"):
        _read(host, "note.png")
    (workspace / "broken.docx").write_bytes(b"PK\x03\x04 definitely not a docx")
    with pytest.raises(ToolArgumentError, match="could not read 'broken.docx'"):
        _read(host, "broken.docx")
    with wave.open(str(workspace / "memo.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\x00\x00" * 1600)
    with pytest.raises(ToolUnavailableError, match="whisper-asr: audio files cannot be transcribed: no local Whisper"):
        _read(host, "memo.wav")


def test_wav_decoding_for_speech_recognition(workspace):
    """What the Whisper backend is fed: mono float samples in [-1, 1] at 16 kHz, from any PCM wav."""
    import numpy as np

    from mmat.tools.context import WorkspaceFile
    from mmat.tools.documents import ASR_SAMPLE_RATE, _read_audio

    rate, seconds = 22_050, 0.5
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1)
    with wave.open(str(workspace / "tone.wav"), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(rate), w.writeframes(stereo.tobytes())
    samples = _read_audio(WorkspaceFile("tone.wav", (workspace / "tone.wav").read_bytes()))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - ASR_SAMPLE_RATE * seconds) <= 1
    assert 0.45 < np.abs(samples).max() <= 0.5
    (workspace / "fake.wav").write_bytes(b"RIFF not really")
    with pytest.raises(ToolArgumentError, match="cannot read audio 'fake.wav'"):
        _read_audio(WorkspaceFile("fake.wav", b"RIFF not really"))
