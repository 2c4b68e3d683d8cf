"""The dataset card (README.md) and manifest (mmat_export.json) written with every export.

Several exports may share one folder (an SFT and a DPO set for LLaMA-Factory, say): each export
updates its entry in the manifest, and the card is rendered from the whole manifest, so it always
describes everything in the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "update_card"]

MANIFEST = "mmat_export.json"

_USAGE = {
    "llamafactory": (
        "LLaMA-Factory reads `dataset_info.json` from `dataset_dir`; image paths are relative to `media_dir`, which "
        "defaults to `dataset_dir`, so this works from any working directory:\n\n"
        "```yaml\ndataset_dir: {dir}\ndataset: {name}\ntemplate: qwen2_vl   # or your model's template\n"
        "{stage}```"),
    "swift": (
        "ms-swift resolves `dataset_path` in `swift_dataset_info.json` against that file's folder, and relative image "
        "paths against `ROOT_IMAGE_DIR`:\n\n"
        "```bash\nROOT_IMAGE_DIR={dir} swift {cmd} --custom_dataset_info {dir}/swift_dataset_info.json --dataset {name} ...\n```"),
    "hf": (
        "A `datasets` folder (`load_from_disk`) and the same rows as Parquet, in TRL's conversational layout:\n\n"
        "```python\nfrom datasets import load_from_disk\nds = load_from_disk(\"{dir}/{name}\")   # or load_dataset(\"parquet\", "
        "data_files=\"{dir}/{name}.parquet\")\n```"),
    "openai": "OpenAI chat fine-tuning JSONL (`{name}.jsonl`).",
    "parquet": "mmat's own rows, one per trajectory with its task, files and steps: `mmat import mmat {dir}` reads them back.",
}


def _usage(entry: dict[str, Any], out_dir: Path) -> str:
    dpo = entry["kind"] == "dpo"
    text = _USAGE[entry["format"]]
    return text.format(dir=out_dir.resolve(), name=entry["name"], stage="stage: dpo\n" if dpo else "stage: sft\n",
                       cmd="rlhf --rlhf_type dpo" if dpo else "sft")


def _list(values: dict[str, int] | list[str]) -> str:
    if isinstance(values, dict):
        return ", ".join(f"{k} ({v})" for k, v in values.items()) or "none"
    return ", ".join(values) or "none"


def update_card(out_dir: Path, entry: dict[str, Any], *, mmat_version: str, license: str | None) -> Path:
    """Record ``entry`` (one export) in the folder's manifest and rewrite README.md from it; returns the card path."""
    path = out_dir / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    manifest["mmat_version"] = mmat_version
    if license or "license" not in manifest:
        manifest["license"] = license or "other"
    manifest["datasets"][entry["name"]] = entry
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))

    configs = "".join(
        f"- config_name: {e['name']}\n  data_files: {e['name']}.parquet\n"
        for e in manifest["datasets"].values() if e["format"] == "hf")
    front = f"---\nlicense: {manifest['license']}\ntags:\n- mmat\n- agent\n- tool-use\n- multimodal\n"
    if configs:
        front += f"configs:\n{configs}"
    front += "---\n"
    sections = []
    for e in manifest["datasets"].values():
        sections.append(f"""## {e['name']} ({e['format']}, {e['kind']})

- rows: {e['n_rows']} ({'preference pairs' if e['kind'] == 'dpo' else 'trajectories'}), images: {e['n_images']} (`--images {e['images']}`)
- files: {', '.join(f'`{f}`' for f in e['files'])}
- teacher models: {_list(e['teachers'])}; controller models: {_list(e['controllers'])}; verifier models: {_list(e['verifiers'])}
- tools offered: {_list(e['tools'])}
- domains: {_list(e['domains'])}
- origins: {_list(e['origins'])}
- prompts rendered for: `{e['model']}` (the agent's exact inference prompt{'; images as text for a text student' if e.get('text') else ''})
- selection (`--where`): `{e['where']}`
- exported: {e['created_at']}

{_usage(e, out_dir)}
""")
    body = f"""# mmat export

Agent trajectories written by [mmat](https://github.com/) {manifest['mmat_version']}: multimodal tasks solved by a
code-action agent with tools, kept when verified correct (or as selected below). Each row is the conversation the
agent saw at inference, token for token — system prompt, task, tool list, images, each step's thought and code and
its observation — so a model trained on it is served with the same prompt.

License: {manifest['license']} (set with `mmat export --license`; check the licences of the images and of the
models that wrote the data).

{''.join(sections)}"""
    card = out_dir / "README.md"
    card.write_text(front + body, encoding="utf-8")
    return card
