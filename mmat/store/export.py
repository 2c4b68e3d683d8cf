"""Exports of stored trajectories and preference pairs to the formats trainers read.

Every exporter takes *conversations*: the exact OpenAI-format messages the agent saw at inference
(rebuilt from the store by ``mmat.programs.trajectory_conversation``), with images as ``image_url``
parts pointing at files. Formats:

- ``parquet``   — the store's own rows (tasks + trajectories with nested steps), via DuckDB ``COPY``.
- ``hf``        — a Hugging Face ``datasets`` Parquet file with an ``Image`` sequence feature.
- ``llamafactory`` — LLaMA-Factory ShareGPT-style JSON + ``dataset_info.json`` (images column;
  DPO rows as ``ranking`` data with chosen/rejected).
- ``swift``     — ms-swift JSONL (messages/images/tools; DPO with ``rejected_response``).
- ``openai``    — OpenAI chat-format JSONL (``{"messages": [...]}``; images as data URLs).
"""

from __future__ import annotations

import base64
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat.errors import ConfigError

__all__ = [
    "Conversation",
    "PreferenceRow",
    "EXPORT_FORMATS",
    "IMAGE_TOKEN",
    "flatten_images",
    "export_conversations",
    "export_preferences",
    "export_parquet",
]

EXPORT_FORMATS = ("parquet", "hf", "llamafactory", "swift", "openai")
IMAGE_TOKEN = "<image>"  # placeholder both LLaMA-Factory and ms-swift expect in text content


@dataclass
class Conversation:
    """One training sample: messages as sent at inference, plus where it came from."""

    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)  # traj_id, task_id, ...
    tools: list[dict[str, Any]] = field(default_factory=list)  # tool specs for formats that carry them


@dataclass
class PreferenceRow:
    """One step-level pair: the shared prompt messages, then the chosen and rejected assistant step."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)


def _image_ref(part: dict[str, Any]) -> str:
    url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"image part without a url: {part!r}")
    return url


def flatten_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    """Messages with text-only content (images as IMAGE_TOKEN, in order) and the image refs in that order."""
    flat, images = [], []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") == "image_url":
                    images.append(_image_ref(part))
                    texts.append(IMAGE_TOKEN)
                elif part.get("type") == "text":
                    texts.append(part["text"])
            content = "\n".join(texts)
        flat.append({"role": msg["role"], "content": content or ""})
    return flat, images


def _data_url(ref: str) -> str:
    if ref.startswith("data:"):
        return ref
    path = Path(ref)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _as_data_urls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": _data_url(_image_ref(p))}} if p.get("type") == "image_url" else p
                for p in content
            ]
        out.append({**msg, "content": content})
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _sharegpt_tags() -> dict[str, str]:
    return {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "observation_tag": "tool", "system_tag": "system"}


def _split_system(flat: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    if flat and flat[0]["role"] == "system":
        return flat[0]["content"], flat[1:]
    return "", flat


def export_conversations(conversations: list[Conversation], fmt: str, out_dir: Path, name: str = "mmat_sft") -> Path:
    """Write SFT conversations in ``fmt``; returns the main file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "openai":
        path = out_dir / f"{name}.jsonl"
        _write_jsonl(path, [{"messages": _as_data_urls(c.messages)} for c in conversations])
        return path
    if fmt == "swift":
        path = out_dir / f"{name}.jsonl"
        rows = []
        for c in conversations:
            flat, images = flatten_images(c.messages)
            rows.append({"messages": flat, "images": images, "tools": json.dumps(c.tools, ensure_ascii=False)})
        _write_jsonl(path, rows)
        return path
    if fmt == "llamafactory":
        path = out_dir / f"{name}.json"
        rows = []
        for c in conversations:
            flat, images = flatten_images(c.messages)
            system, turns = _split_system(flat)
            rows.append({"messages": turns, "system": system, "images": images, "tools": json.dumps(c.tools, ensure_ascii=False)})
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        _update_dataset_info(out_dir, name, {
            "file_name": path.name, "formatting": "sharegpt",
            "columns": {"messages": "messages", "system": "system", "images": "images", "tools": "tools"},
            "tags": _sharegpt_tags(),
        })
        return path
    if fmt == "hf":
        return _export_hf(conversations, out_dir / f"{name}.parquet")
    raise ConfigError(f"unknown export format '{fmt}': choose one of {', '.join(EXPORT_FORMATS)}.")


def _export_hf(conversations: list[Conversation], path: Path) -> Path:
    import datasets

    records = []
    for c in conversations:
        flat, images = flatten_images(c.messages)
        records.append({
            "messages": flat,
            "images": [{"bytes": Path(r).read_bytes() if not r.startswith("data:") else base64.b64decode(r.split(",", 1)[1]), "path": None} for r in images],
            "meta": json.dumps(c.meta, ensure_ascii=False, default=str),
        })
    features = datasets.Features({
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "images": datasets.Sequence(datasets.Image()),
        "meta": datasets.Value("string"),
    })
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a one-shot write needs no bar, and CLI output stays clean
    try:
        datasets.Dataset.from_list(records, features=features).to_parquet(str(path))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return path


def _update_dataset_info(out_dir: Path, name: str, entry: dict[str, Any]) -> None:
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = entry
    info_path.write_text(json.dumps(info, indent=2))


def export_preferences(rows: list[PreferenceRow], fmt: str, out_dir: Path, name: str = "mmat_dpo") -> Path:
    """Write step-level preference pairs: LLaMA-Factory ranking data or ms-swift rejected_response."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "llamafactory":
        path = out_dir / f"{name}.json"
        records = []
        for r in rows:
            flat, images = flatten_images(r.prompt)
            system, turns = _split_system(flat)
            records.append({
                "messages": turns, "system": system, "images": images,
                "chosen": {"role": "assistant", "content": r.chosen},
                "rejected": {"role": "assistant", "content": r.rejected},
            })
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
        _update_dataset_info(out_dir, name, {
            "file_name": path.name, "formatting": "sharegpt", "ranking": True,
            "columns": {"messages": "messages", "system": "system", "images": "images", "chosen": "chosen", "rejected": "rejected"},
            "tags": _sharegpt_tags(),
        })
        return path
    if fmt == "swift":
        path = out_dir / f"{name}.jsonl"
        records = []
        for r in rows:
            flat, images = flatten_images(r.prompt)
            records.append({"messages": flat + [{"role": "assistant", "content": r.chosen}],
                            "rejected_response": r.rejected, "images": images})
        _write_jsonl(path, records)
        return path
    raise ConfigError(f"preference pairs export to '{fmt}' is not supported: use llamafactory or swift.")


def export_parquet(store, out_dir: Path, where: str | None = None) -> Path:
    """The store's trajectories with their task and nested steps, one row per trajectory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trajectories.parquet"
    condition = f"WHERE {where}" if where else ""
    query = f"""
        SELECT t.*, k.query, k.domain, k.split, k.intended_tools,
               (SELECT list(s ORDER BY s.idx) FROM steps s WHERE s.traj_id = t.traj_id) AS steps,
               (SELECT list(f ORDER BY f.name) FROM files f WHERE f.task_id = t.task_id) AS files
        FROM trajectories t JOIN tasks k USING (task_id) {condition}
    """
    import pyarrow.parquet as pq

    pq.write_table(store.sql_arrow(query), path)
    return path
