"""Turning stored values into safe HTML fragments: highlighted code, markdown, tables, file previews.

Everything here escapes what it is given: task text, model output and file contents are untrusted.
Markdown is rendered with raw HTML off (markdown-it escapes it) and links limited to markdown-it's
safe schemes; code goes through Pygments, whose HTML formatter escapes the source.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path, PurePosixPath
from typing import Any

from markupsafe import Markup, escape

__all__ = ["highlight_code", "markdown_html", "csv_table", "file_preview", "pretty_json", "blob_id", "pygments_css",
           "MAX_PREVIEW_CHARS", "MAX_TABLE_ROWS"]

MAX_PREVIEW_CHARS = 20_000
MAX_TABLE_ROWS = 200
_TEXT_SUFFIXES = {".txt", ".md", ".json", ".py", ".xml", ".yaml", ".yml", ".log", ".tex"}


def _formatter():
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="hl", nowrap=False)


def highlight_code(code: str | None, language: str = "python") -> Markup:
    from pygments import highlight
    from pygments.lexers import TextLexer, get_lexer_by_name

    if not code:
        return Markup("")
    try:
        lexer = get_lexer_by_name(language)
    except Exception:  # pygments raises ClassNotFound for an unknown name: show plain text
        lexer = TextLexer()
    return Markup(highlight(code, lexer, _formatter()))


def pygments_css() -> str:
    return _formatter().get_style_defs(".hl")



def markdown_html(text: str | None) -> Markup:
    from markdown_it import MarkdownIt

    if not text:
        return Markup("")
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(md.render(text[:MAX_PREVIEW_CHARS]))


def csv_table(text: str) -> Markup:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return Markup("<p class=muted>(empty table)</p>")
    head, body = rows[0], rows[1 : MAX_TABLE_ROWS + 1]
    parts = ["<table class=data><thead><tr>", *(f"<th>{escape(c)}</th>" for c in head), "</tr></thead><tbody>"]
    for row in body:
        parts += ["<tr>", *(f"<td>{escape(c)}</td>" for c in row), "</tr>"]
    parts.append("</tbody></table>")
    if len(rows) - 1 > MAX_TABLE_ROWS:
        parts.append(f"<p class=muted>first {MAX_TABLE_ROWS} of {len(rows) - 1} rows</p>")
    return Markup("".join(parts))


def file_preview(path: Path | None, name: str, modality: str | None) -> Markup:
    """What a file holds, as HTML: a table for CSV, markdown for documents, text for text; images are <img> elsewhere."""
    if path is None:
        return Markup("<p class=error>the blob is missing from the store</p>")
    suffix = Path(name).suffix.lower() or path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return csv_table(path.read_text(encoding="utf-8", errors="replace")[:MAX_PREVIEW_CHARS * 5])
        if suffix in _TEXT_SUFFIXES or modality in ("text", "code"):
            text = path.read_text(encoding="utf-8", errors="replace")[:MAX_PREVIEW_CHARS]
            return highlight_code(text, "python") if suffix == ".py" else Markup(f"<pre>{escape(text)}</pre>")
        if modality in ("document", "table") or suffix in (".pdf", ".docx", ".xlsx", ".pptx", ".html", ".htm"):
            from mmat.tools.documents import file_to_markdown

            return markdown_html(file_to_markdown(path, name))
    except Exception as e:  # a damaged file is shown as such, never a failed page
        return Markup(f"<p class=error>cannot show {escape(name)}: {escape(str(e)[:300])}</p>")
    return Markup(f"<p class=muted>{escape(modality or 'binary')} file: no preview</p>")


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def blob_id(rel: str | None) -> str | None:
    """The content id (sha256) of a blob from its stored relative path ``ab/<sha256><suffix>``."""
    if not rel:
        return None
    name = PurePosixPath(rel).name
    sha = name.split(".", 1)[0]
    return sha if len(sha) == 64 else None
