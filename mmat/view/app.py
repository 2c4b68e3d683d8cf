"""The `mmat view` web app: Starlette routes over :func:`mmat.view.access.read_store`, Jinja2 pages.

Safety, in one place: every page is autoescaped and sent with a Content-Security-Policy that allows
only this server's own scripts, styles and images (an injected ``<script>`` would not run even if
escaping failed); the Host header must name loopback (no DNS rebinding); the one write (a label)
needs this server's CSRF token; files are served only as blobs by content id, images inline, every
other type as a download.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from mmat.config import Settings
from mmat.errors import MmatError, StoreError, StoreLockedError
from mmat.store.columns import from_json_text
from mmat.view import queries, render
from mmat.view.access import blob_file, read_store, write_store

__all__ = ["create_app", "LOOPBACK_HOSTS", "ASSETS"]

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
ASSETS = Path(__file__).parent / "assets"
_INLINE_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_PLOT_CACHE = 256


def template_env() -> Environment:
    env = Environment(loader=PackageLoader("mmat.view", "templates"), autoescape=select_autoescape(default=True))
    env.filters.update(hl=render.highlight_code, md=render.markdown_html, pjson=render.pretty_json, blob=render.blob_id)
    env.filters["ts"] = lambda v: "" if v is None else (v.strftime("%Y-%m-%d %H:%M:%S") if hasattr(v, "strftime") else str(v))
    env.filters["num"] = lambda v, d=2: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}")
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    return env


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response


class ViewApp:
    """The routes and the state they share (settings, templates, CSRF token, drawn charts)."""

    def __init__(self, settings: Settings, benches: list[Path]):
        self.settings = settings
        self.benches = benches
        self.csrf = secrets.token_urlsafe(24)
        self.templates = Jinja2Templates(env=template_env())
        self.plots: OrderedDict[str, bytes] = OrderedDict()

    # --- helpers ----------------------------------------------------------------------------------------
    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("source", None)
        return self.templates.TemplateResponse(request, name, {"csrf": self.csrf, "static": False, **context}, status_code=status)

    def error(self, request: Request, message: str, status: int) -> HTMLResponse:
        return self.page(request, "error.html", status=status, message=message)

    def keep_plots(self, plots: dict[str, bytes]) -> dict[str, str]:
        from mmat.view.plots import plot_id

        urls = {}
        for name, svg in plots.items():
            pid = plot_id(svg)
            self.plots[pid] = svg
            self.plots.move_to_end(pid)
            urls[name] = f"/plot/{pid}.svg"
        while len(self.plots) > _PLOT_CACHE:
            self.plots.popitem(last=False)
        return urls

    # --- pages ------------------------------------------------------------------------------------------
    def runs(self, request: Request):
        with read_store(self.settings) as (store, source):
            data = queries.runs_page(store)
        return self.page(request, "runs.html", source=source, **data)

    def report(self, request: Request):
        from mmat.pipeline.report import build_report, stage_rates
        from mmat.view.plots import report_plots

        run_id = request.path_params["run_id"]
        with read_store(self.settings) as (store, source):
            report = build_report(store, run_id, benches=self.benches)
        return self.page(request, "report.html", source=source, report=report, plots=self.keep_plots(report_plots(report)),
                         stage_rates=stage_rates(report))

    def plot(self, request: Request):
        svg = self.plots.get(request.path_params["pid"])
        if svg is None:
            return Response("chart expired: reload the report page", status_code=404, media_type="text/plain")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})

    def browse(self, request: Request):
        f = queries.BrowseFilter.from_query(request.query_params)
        with read_store(self.settings) as (store, source):
            result = queries.browse(store, f)
            options = queries.filter_options(store)
        return self.page(request, "browse.html", source=source, f=f, result=result, options=options, page_size=queries.PAGE_SIZE)

    def task(self, request: Request):
        with read_store(self.settings) as (store, source):
            data = queries.task_page(store, request.path_params["task_id"])
            label = self._label(store, "task", request.path_params["task_id"])
            previews = self._previews(data["files"]) if data else {}
        if data is None:
            return self.error(request, f"no task {request.path_params['task_id']!r} in the store", 404)
        return self.page(request, "task.html", source=source, label=label, previews=previews, **data)

    def trajectory(self, request: Request):
        traj_id = request.path_params["traj_id"]
        with read_store(self.settings) as (store, source):
            data = queries.trajectory_page(store, traj_id)
            if data is None:
                return self.error(request, f"no trajectory {traj_id!r} in the store", 404)
            label = self._label(store, "trajectory", traj_id)
            conversation, conversation_note = self._conversation(store, data["traj"])
            previews = self._previews(data["files"])
        return self.page(request, "trajectory.html", source=source, label=label, conversation=conversation,
                         conversation_note=conversation_note, previews=previews, **data)

    def pairs(self, request: Request):
        run = (request.query_params.get("run") or "").strip()
        page = _page(request)
        with read_store(self.settings) as (store, source):
            pairs, total = queries.pairs_page(store, run, page)
            runs = [r["run_id"] for r in store.sql("SELECT DISTINCT run_id FROM preference_pairs WHERE run_id IS NOT NULL ORDER BY 1")]
        per_page = queries.PAGE_SIZE // 5
        return self.page(request, "pairs.html", source=source, pairs=pairs, total=total, page=page, run=run, runs=runs,
                         pages=max(1, -(-total // per_page)))

    def evals(self, request: Request):
        with read_store(self.settings) as (store, source):
            runs = queries.eval_runs(store)
        return self.page(request, "evals.html", source=source, runs=runs)

    def eval_run(self, request: Request):
        run_id = request.path_params["eval_run_id"]
        with read_store(self.settings) as (store, source):
            runs = [r for r in queries.eval_runs(store) if r["eval_run_id"] == run_id]
            items = queries.eval_items(store, run_id)
        if not runs:
            return self.error(request, f"no eval run {run_id!r} in the store", 404)
        metrics = sorted({k for i in items for k in i["ans_acc"]})
        return self.page(request, "eval_run.html", source=source, run=runs[0], items=items, metrics=metrics)

    def eval_diff(self, request: Request):
        from mmat.eval import compare_runs

        a, b = (request.query_params.get(k, "").strip() for k in ("a", "b"))
        error, comparison = None, None
        with read_store(self.settings) as (store, source):
            try:
                comparison = compare_runs(store, a, b)  # also resolves unique prefixes
                a, b = comparison.a.eval_run_id, comparison.b.eval_run_id
            except (MmatError, ValueError) as e:  # unknown run, or metrics this version cannot read
                error = str(e)
            items_a, items_b = queries.eval_items(store, a), queries.eval_items(store, b)
        by_key = {}
        for side, items in (("a", items_a), ("b", items_b)):
            for item in items:
                by_key.setdefault((item["item_key"], item["sample_idx"]), {})[side] = item
        metrics = sorted({k for i in items_a + items_b for k in i["ans_acc"]})
        rows = [{"key": k, **v, "changed": (v.get("a") or {}).get("ans_acc") != (v.get("b") or {}).get("ans_acc")}
                for k, v in by_key.items()]
        return self.page(request, "eval_diff.html", source=source, a=a, b=b, comparison=comparison,
                         deltas=comparison.deltas if comparison else [], error=error, rows=rows, metrics=metrics)

    # --- writes and files ---------------------------------------------------------------------------------
    async def label(self, request: Request):
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        wants_json = "application/json" in request.headers.get("accept", "")
        if not secrets.compare_digest(form.get("csrf", ""), self.csrf):
            return JSONResponse({"ok": False, "error": "stale page: reload it and label again"}, status_code=403)
        kind, subject, value = form.get("subject_kind", ""), form.get("subject_id", ""), form.get("label", "")
        note = form.get("note", "").strip()
        ok, message = self._write_label(kind, subject, value, note)
        if wants_json:
            return JSONResponse({"ok": ok, "message": message, "label": value if ok else None}, status_code=200 if ok else 400)
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        return RedirectResponse(target, status_code=303) if ok else self.error(request, message, 400)

    def blob(self, request: Request):
        path = blob_file(self.settings, request.path_params["sha"])
        if path is None:
            return Response("no such blob", status_code=404, media_type="text/plain")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if mime in _INLINE_IMAGES:
            return FileResponse(path, media_type=mime, headers={"Cache-Control": "max-age=86400"})
        return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                            headers={"Content-Security-Policy": "default-src 'none'; sandbox"})

    def pygments_css(self, request: Request):
        return Response(render.pygments_css(), media_type="text/css")

    # --- pieces ---------------------------------------------------------------------------------------------
    def _label(self, store, kind: str, subject: str) -> dict[str, Any] | None:
        rows = store.sql("SELECT verdict, reasons, created_at FROM verdicts WHERE verifier = 'label' AND subject_kind = ? "
                         "AND subject_id = ? ORDER BY created_at DESC LIMIT 1", [kind, subject])
        if not rows:
            return None
        reasons = from_json_text(rows[0]["reasons"]) or []
        return {"label": rows[0]["verdict"], "note": "; ".join(map(str, reasons)), "at": rows[0]["created_at"]}

    def _previews(self, files: list[dict[str, Any]]):
        out = {}
        for f in files:
            if f["modality"] != "image":
                out[f["file_id"]] = render.file_preview(blob_file(self.settings, f["sha256"] or ""), f["name"] or "", f["modality"])
        return out

    def _conversation(self, store, traj: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        """The exact training conversation (mmat's finetuning builder), rendered for the trajectory's controller."""
        from mmat.pipeline.training_data import load_conversations

        if not store.sql("SELECT 1 FROM tasks WHERE task_id = ?", [traj["task_id"]]):
            return [], "no training conversation: this trajectory's task is not a stored task (an eval item)"
        try:
            conversations, selection = load_conversations(store, f"t.traj_id = {queries.sql_literal(traj['traj_id'])}",
                                                          model=traj["controller"] or self.settings.controller_model)
        except (MmatError, ValueError) as e:
            return [], f"cannot rebuild the conversation: {e}"
        if not conversations:
            return [], "; ".join(selection.skipped) or "no conversation"
        messages = []
        for m in conversations[0].messages:
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            shown = []
            for p in parts:
                if p.get("type") == "image_url":
                    url = (p.get("image_url") or {}).get("url", "")
                    shown.append({"image": render.blob_id(Path(url).name if url else None), "url": url})
                else:
                    shown.append({"text": p.get("text", "")})
            messages.append({"role": m["role"], "parts": shown})
        return messages, None

    def _write_label(self, kind: str, subject: str, value: str, note: str) -> tuple[bool, str]:
        from mmat.optimizers import import_labels

        if kind not in ("task", "trajectory") or value not in ("correct", "incorrect") or not subject:
            return False, "a label is correct or incorrect, for a task or a trajectory"
        row = {"subject_kind": kind, "subject_id": subject, "label": value, "note": note}
        with tempfile.TemporaryDirectory() as tmp:
            sheet = Path(tmp) / "label.jsonl"
            sheet.write_text(json.dumps(row) + "\n", encoding="utf-8")
            try:
                with write_store(self.settings) as store:
                    import_labels(store, sheet)  # the same rows `mmat label import` writes
            except StoreLockedError:
                pending = self.settings.home / "labels" / "pending.jsonl"
                pending.parent.mkdir(parents=True, exist_ok=True)
                with pending.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                return False, (f"another process is writing the store, so the label was saved to {pending}: "
                               f"run `mmat label import {pending}` when it is done")
            except MmatError as e:
                return False, str(e)
        return True, f"labelled {kind} {value}"


def _page(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        return 1


def create_app(settings: Settings, *, benches: list[Path] | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The viewer as an ASGI app over the store of ``settings`` (serve it with uvicorn, test it with TestClient)."""
    from starlette.staticfiles import StaticFiles
    from starlette.routing import Mount

    view = ViewApp(settings, list(benches or []))

    async def on_error(request: Request, exc: Exception):
        return view.error(request, str(exc), 503 if isinstance(exc, StoreError) else 400)

    routes = [
        Route("/", view.runs), Route("/runs/{run_id:path}", view.report), Route("/plot/{pid}.svg", view.plot),
        Route("/browse", view.browse), Route("/task/{task_id:path}", view.task),
        Route("/trajectory/{traj_id:path}", view.trajectory), Route("/pairs", view.pairs), Route("/eval", view.evals),
        Route("/eval/diff", view.eval_diff), Route("/eval/run/{eval_run_id:path}", view.eval_run),
        Route("/label", view.label, methods=["POST"]), Route("/blob/{sha}", view.blob),
        Route("/assets/pygments.css", view.pygments_css), Mount("/assets", StaticFiles(directory=ASSETS), name="assets"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS), Middleware(_SecurityHeaders)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={MmatError: on_error})
    app.state.view = view
    return app
