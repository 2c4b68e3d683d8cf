"""Exports of stored trajectories and preference pairs to the formats trainers read.

Every exporter takes *conversations*: the exact OpenAI-format messages the agent saw at inference
(rebuilt from the store by ``mmat.programs.trajectory_conversation``), with images as ``image_url``
parts pointing at files. Row layouts are in :mod:`.layouts`, image placement in :mod:`.media`, the
dataset card in :mod:`.card`, mmat's own lossless records (``parquet`` and the
``mmat_trajectories.jsonl`` / ``mmat_pairs.jsonl`` written next to every export, which
``mmat import mmat`` reads back) in :mod:`.records`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError
from mmat.store.export.layouts import (IMAGE_TOKEN, flatten_images, has_images, openai_messages, sharegpt_row,
                                       swift_row, trl_messages)
from mmat.store.export.media import IMAGE_MODES, MediaSink

__all__ = [
    "Conversation", "PreferenceRow", "EXPORT_FORMATS", "IMAGE_MODES", "IMAGE_TOKEN", "DEFAULT_IMAGES",
    "flatten_images", "export_conversations", "export_preferences", "images_mode",
]

EXPORT_FORMATS = ("parquet", "hf", "llamafactory", "swift", "openai")  # each takes trajectories and --pairs
# hf always embeds (a datasets folder holds its image bytes); openai embeds unless asked (the API reads no files).
DEFAULT_IMAGES = {"parquet": "copy", "hf": "embed", "llamafactory": "copy", "swift": "copy", "openai": "embed"}
_ALLOWED_IMAGES = {"hf": ("embed",), "llamafactory": ("copy", "link"), "parquet": ("copy", "link", "embed"),
                   "swift": IMAGE_MODES, "openai": IMAGE_MODES}


@dataclass
class Conversation:
    """One training sample: messages as sent at inference, plus where it came from."""

    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)  # traj_id, task_id, ...


@dataclass
class PreferenceRow:
    """One step-level pair: the shared prompt messages, then the chosen and rejected assistant step."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)


def images_mode(fmt: str, images: str | None) -> str:
    """The ``--images`` mode for ``fmt`` (its default when None); a mode the format cannot hold is refused."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}': choose one of {', '.join(EXPORT_FORMATS)}.")
    mode = images or DEFAULT_IMAGES[fmt]
    if mode not in _ALLOWED_IMAGES[fmt]:
        why = {"hf": "a datasets folder stores the image bytes itself",
               "llamafactory": "LLaMA-Factory reads images from files, not from data URLs"}[fmt]
        raise ConfigError(f"--images {mode} does not fit {fmt} ({why}): use {' or '.join(_ALLOWED_IMAGES[fmt])}.")
    return mode


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _json_update(path: Path, key: str, value: Any, *, as_list: bool = False) -> None:
    """Add or replace one dataset entry in a registry file shared by several exports in one folder."""
    current = json.loads(path.read_text()) if path.exists() else ([] if as_list else {})
    if as_list:
        current = [d for d in current if d.get("dataset_name") != key] + [value]
    else:
        current[key] = value
    path.write_text(json.dumps(current, indent=2, ensure_ascii=False))


def _drop_empty_images(rows: list[dict[str, Any]]) -> None:
    """Text-only datasets carry no image column (TRL treats any image column as a vision dataset)."""
    if rows and not any(r.get("images") for r in rows):
        for r in rows:
            r.pop("images", None)


def _sharegpt_columns(rows: list[dict[str, Any]], ranking: bool) -> dict[str, str]:
    cols = {"messages": "messages", "system": "system"}
    if rows and "images" in rows[0]:
        cols["images"] = "images"
    if ranking:
        cols |= {"chosen": "chosen", "rejected": "rejected"}
    return cols


_SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                  "system_tag": "system"}


def _write_llamafactory(rows: list[dict[str, Any]], out_dir: Path, name: str, ranking: bool) -> list[str]:
    _drop_empty_images(rows)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    entry: dict[str, Any] = {"file_name": path.name, "formatting": "sharegpt",
                             "columns": _sharegpt_columns(rows, ranking), "tags": _SHAREGPT_TAGS}
    if ranking:
        entry["ranking"] = True
    _json_update(out_dir / "dataset_info.json", name, entry)
    return [path.name, "dataset_info.json"]


def _write_swift(rows: list[dict[str, Any]], out_dir: Path, name: str) -> list[str]:
    _drop_empty_images(rows)
    path = out_dir / f"{name}.jsonl"
    _write_jsonl(path, rows)
    _json_update(out_dir / "swift_dataset_info.json", name, {"dataset_name": name, "dataset_path": path.name}, as_list=True)
    return [path.name, "swift_dataset_info.json"]


def _hf_features(rows: list[dict[str, Any]], pairs: bool):
    import datasets

    vlm = "images" in rows[0]
    text = datasets.Value("string")
    content = [{"type": text, "text": text}] if vlm else text
    message = [{"role": text, "content": content}]
    cols: dict[str, Any] = ({"prompt": message, "chosen": message, "rejected": message} if pairs else {"messages": message})
    if vlm:
        cols["images"] = datasets.Sequence(datasets.Image())
    cols["mmat"] = text  # provenance (traj_id, task_id, ...), JSON text
    return datasets.Features(cols)


def _write_hf(rows: list[dict[str, Any]], out_dir: Path, name: str, pairs: bool) -> list[str]:
    import shutil

    import datasets

    _drop_empty_images(rows)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a one-shot write needs no bar, and CLI output stays clean
    try:
        ds = datasets.Dataset.from_list(rows, features=_hf_features(rows, pairs))
        folder = out_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        ds.save_to_disk(str(folder))
        ds.to_parquet(str(out_dir / f"{name}.parquet"))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return [f"{name}/", f"{name}.parquet"]


def _hf_image(ref: str) -> dict[str, Any]:
    import base64

    return {"bytes": base64.b64decode(ref.split(",", 1)[1]), "path": None}


def export_conversations(conversations: list[Conversation], fmt: str, out_dir: Path, *, images: str | None = None,
                         name: str = "mmat_sft", text: bool = False) -> tuple[Path, list[str], int]:
    """Write SFT conversations as ``fmt``; returns (main path, files written, images placed).

    ``text``: the conversations were rendered for a text student (no image parts may remain).
    """
    mode = images_mode(fmt, images)
    out_dir.mkdir(parents=True, exist_ok=True)
    sink = MediaSink(out_dir, mode)
    if fmt == "openai":
        path = out_dir / f"{name}.jsonl"
        _write_jsonl(path, [{"messages": openai_messages(c.messages, sink.ref)} for c in conversations])
        files = [path.name]
    elif fmt == "swift":
        files = _write_swift([swift_row(c.messages, sink.ref) for c in conversations], out_dir, name)
        path = out_dir / files[0]
    elif fmt == "llamafactory":
        files = _write_llamafactory([sharegpt_row(c.messages, sink.ref) for c in conversations], out_dir, name, False)
        path = out_dir / files[0]
    elif fmt == "hf":
        vlm = not text and any(has_images(c.messages) for c in conversations)
        rows = []
        for c in conversations:
            messages, refs = trl_messages(c.messages, sink.ref, vlm=vlm)
            row: dict[str, Any] = {"messages": messages, "mmat": json.dumps(c.meta, default=str)}
            if vlm:
                row["images"] = [_hf_image(r) for r in refs]
            rows.append(row)
        files = _write_hf(rows, out_dir, name, pairs=False)
        path = out_dir / name
    else:
        raise ConfigError("parquet exports are written from the store's records (mmat.store.export.records).")
    return path, files, sink.n_placed


def export_preferences(rows: list[PreferenceRow], fmt: str, out_dir: Path, *, images: str | None = None,
                       name: str = "mmat_dpo", text: bool = False) -> tuple[Path, list[str], int]:
    """Write step-level preference pairs as ``fmt``; returns (main path, files written, images placed)."""
    mode = images_mode(fmt, images)
    out_dir.mkdir(parents=True, exist_ok=True)
    sink = MediaSink(out_dir, mode)
    if fmt == "llamafactory":
        files = _write_llamafactory([sharegpt_row(r.prompt, sink.ref, chosen=r.chosen, rejected=r.rejected) for r in rows],
                                    out_dir, name, True)
        path = out_dir / files[0]
    elif fmt == "swift":
        files = _write_swift([swift_row(r.prompt, sink.ref, chosen=r.chosen, rejected=r.rejected) for r in rows], out_dir, name)
        path = out_dir / files[0]
    elif fmt == "openai":
        path = out_dir / f"{name}.jsonl"
        _write_jsonl(path, [{"input": {"messages": openai_messages(r.prompt, sink.ref)},
                             "preferred_output": [{"role": "assistant", "content": r.chosen}],
                             "non_preferred_output": [{"role": "assistant", "content": r.rejected}]} for r in rows])
        files = [path.name]
    elif fmt == "hf":
        vlm = not text and any(has_images(r.prompt) for r in rows)
        out = []
        for r in rows:
            prompt, refs = trl_messages(r.prompt, sink.ref, vlm=vlm)
            wrap = (lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]) if vlm else (
                lambda t: [{"role": "assistant", "content": t}])
            row: dict[str, Any] = {"prompt": prompt, "chosen": wrap(r.chosen), "rejected": wrap(r.rejected),
                                   "mmat": json.dumps(r.meta, default=str)}
            if vlm:
                row["images"] = [_hf_image(x) for x in refs]
            out.append(row)
        files = _write_hf(out, out_dir, name, pairs=True)
        path = out_dir / name
    else:
        raise ConfigError("parquet exports are written from the store's records (mmat.store.export.records).")
    return path, files, sink.n_placed
