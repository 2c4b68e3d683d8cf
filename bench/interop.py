"""Interop check: the real LLaMA-Factory, ms-swift and TRL loaders on a fresh `mmat export`.

Not part of `make test` (it installs two side venvs, ~3 GB, and takes minutes). What it does:

1. Builds a store with multimodal trajectories (two task images, one produced by a step), a text-only one and
   a step pair (``mmat.testing.trajectory_store``), and tiny random LLaVA / text students
   (``mmat.testing.tiny_models``); exports every format, SFT and DPO, and a ``--text`` SFT set.
2. Side venvs, because the consumers pin incompatible ``datasets`` versions (LLaMA-Factory 0.9.5: <= 4.0.0;
   ms-swift 4.6: >= 4.0 and needs ``datasets.features.Json``, i.e. 4.8):
   - ``lf``: torch==2.13.0 + llamafactory==0.9.5. LLaMA-Factory pulls CUDA-only torchvision/torchaudio wheels
     that do not import next to the CPU torch: both are removed, and since its ``mm_plugin`` imports
     torchaudio unconditionally, a stub package (raising on any use) takes its place; images never use it.
   - ``swift``: torch==2.13.0 + ms-swift==4.6.0 (torchvision/torchaudio removed the same way).
   - TRL: mmat's own venv (TRL 1.16, the version mmat trains with).
3. Runs, in those venvs: LLaMA-Factory ``get_dataset`` (sft and rm/dpo stages, ``dataset_dir`` = the export
   folder, run from another working directory), ms-swift ``load_dataset`` via ``--custom_dataset_info`` +
   ``template.encode`` with ``ROOT_IMAGE_DIR``, TRL ``SFTTrainer``/``DPOTrainer`` one step on ``load_from_disk``.
   Prints a table and appends it to bench/RESULTS.md (unless --no-results).

Run:  python bench/interop.py [--venvs DIR] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).with_name("RESULTS.md")
MODEL = "dummy/agent"

VENVS = {
    "lf": ["llamafactory==0.9.5"],
    "swift": ["ms-swift==4.6.0"],
}
TORCH = "torch==2.13.0"
_STUB = '''"""Stand-in written by mmat's bench/interop.py: the torchaudio wheel on the index is a CUDA build that cannot
import next to the CPU torch, and LLaMA-Factory imports torchaudio unconditionally. Image data never calls it."""
__version__ = "0.0.0+mmat-stub"


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is a stub in this venv (no CPU build is available)")
'''


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_venv(root: Path, name: str) -> Path:
    """A venv with the consumer installed (reused when its marker matches the pins)."""
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / ".mmat-interop"
    pins = json.dumps([TORCH, *VENVS[name]])
    if marker.is_file() and marker.read_text() == pins:
        return python
    print(f"[interop] building the {name} venv in {venv} ...", flush=True)
    base = os.path.realpath(sys.executable)  # the interpreter behind mmat's venv
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)  # first, so nothing replaces the CPU wheel
    subprocess.run([*pip, TORCH, *VENVS[name]], check=True)
    _run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio"])
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    if name == "lf":
        stub = Path(site) / "torchaudio"
        stub.mkdir(exist_ok=True)
        (stub / "__init__.py").write_text(_STUB)
    marker.write_text(pins)
    return python


LF_CHECK = textwrap.dedent('''
    import json, sys, tempfile
    export, stage, name, template, model = sys.argv[1:6]
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    args = dict(stage=stage, model_name_or_path=model, dataset=name, dataset_dir=export, template=template,
                cutoff_len=16384, output_dir=tempfile.mkdtemp(), do_train=True, overwrite_cache=True,
                report_to="none", finetuning_type="lora", use_cpu=True)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, stage=stage, **tm)["train_dataset"]
    key = "labels" if "labels" in ds.features else "chosen_labels"
    supervised = sum(sum(1 for x in row[key] if x != -100) for row in ds)
    images = sum(len(row["images"] or []) for row in ds) if "images" in ds.features else 0
    print("RESULT " + json.dumps({"rows": len(ds), "supervised_tokens": supervised, "images": images}))
''')

SWIFT_CHECK = textwrap.dedent('''
    import json, os, sys
    export, name, model, template_type = sys.argv[1:5]
    from swift.dataset import load_dataset
    from swift.dataset.register import register_dataset_info
    from swift.model import get_processor
    from swift.template import get_template
    register_dataset_info(os.path.join(export, "swift_dataset_info.json"))
    train, _ = load_dataset([name], strict=True)
    proc = get_processor(model, model_type=template_type, download_model=False)
    tpl = get_template(proc, template_type=template_type, max_length=None)
    if "rejected_response" in train.features:
        tpl.set_mode("rlhf")
    lengths = []
    for row in train:
        enc = tpl.encode(row)
        lengths.append(len(enc.get("input_ids") or enc.get("chosen_input_ids") or []))
    images = sum(len(r.get("images") or []) for r in train)
    print("RESULT " + json.dumps({"rows": len(train), "encoded": sum(1 for n in lengths if n), "images": images}))
''')


def consumer(python: Path, script: str, args: list[str], env: dict[str, str], cwd: Path) -> dict:
    start = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    proc = _run([str(python), f.name, *args], env={**os.environ, **env}, cwd=cwd, timeout=900)
    os.unlink(f.name)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    result = json.loads(line[7:]) if line else {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


def trl_checks(exports: Path, models: dict[str, Path], cwd: Path) -> dict[str, dict]:
    """TRL 1.16 from mmat's venv: one SFT step (VLM, text LM) and one DPO step (VLM) on load_from_disk."""
    script = textwrap.dedent('''
        import json, sys
        import datasets, torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
        from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
        kind, folder, model = sys.argv[1:4]
        torch.set_num_threads(1)
        ds = datasets.load_from_disk(folder).remove_columns("mmat")
        vlm = "images" in ds.features
        net = (AutoModelForImageTextToText if vlm else AutoModelForCausalLM).from_pretrained(model)
        proc = (AutoProcessor if vlm else AutoTokenizer).from_pretrained(model)
        target = r".*(language_model|text_model).*\\.(q|v)_proj" if vlm else ["q_proj", "v_proj"]
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=target, task_type="CAUSAL_LM")
        cls, trainer = (DPOConfig, DPOTrainer) if kind == "dpo" else (SFTConfig, SFTTrainer)
        args = cls(output_dir="trl_out", max_steps=1, per_device_train_batch_size=1, report_to="none", save_strategy="no",
                   logging_steps=1, use_cpu=True, bf16=False, disable_tqdm=True, max_length=None)
        t = trainer(model=net, args=args, train_dataset=ds, processing_class=proc, peft_config=lora)
        t.train()
        loss = [h["loss"] for h in t.state.log_history if "loss" in h][0]
        print("RESULT " + json.dumps({"rows": len(ds), "steps": t.state.global_step, "loss": round(loss, 3)}))
    ''')
    py = Path(sys.executable)
    return {
        "hf sft (VLM)": consumer(py, script, ["sft", str(exports / "hf" / "mmat_sft"), str(models["idefics3"])], {}, cwd),
        "hf dpo (VLM)": consumer(py, script, ["dpo", str(exports / "hf" / "mmat_dpo"), str(models["idefics3"])], {}, cwd),
        "hf sft (text LM, --text)": consumer(py, script, ["sft", str(exports / "hf_text" / "mmat_sft"), str(models["text"])], {}, cwd),
    }


def round_trip(folder: Path, home: Path) -> dict:
    """mmat's own reader: the parquet export imported into an empty store."""
    from mmat.config import load_settings
    from mmat.pipeline.importers import run_import

    start = time.monotonic()
    os.environ["MMAT_HOME"] = str(home)
    report = run_import(load_settings(), "mmat", folder)
    return {"rows": report.trajectories, "pairs": report.pairs, "bad": len(report.bad),
            "seconds": round(time.monotonic() - start, 1)}


def build_exports(work: Path) -> tuple[Path, dict[str, Path], dict[str, int]]:
    os.environ["MMAT_HOME"] = str(work / "home")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from mmat.config import load_settings
    from mmat.pipeline.exports import run_export
    from mmat.store import Store
    from mmat.testing.tiny_models import build_tiny_idefics3, build_tiny_llava, build_tiny_text_lm
    from mmat.testing.trajectory_store import build_export_store

    store = Store.for_settings(load_settings())
    build_export_store(store, work / "scratch")
    store.close()
    exports = work / "exports"
    counts = {}
    for fmt in ("llamafactory", "swift", "hf", "parquet"):
        for pairs in (False, True):
            counts[f"{fmt} {'dpo' if pairs else 'sft'}"] = run_export(load_settings(), fmt, exports / fmt, model=MODEL,
                                                                      pairs=pairs).n_rows
    for fmt in ("llamafactory", "hf"):
        counts[f"{fmt} sft --text"] = run_export(load_settings(), fmt, exports / f"{fmt}_text", model=MODEL, text=True).n_rows
    models = {"llava": build_tiny_llava(work / "models" / "llava"), "idefics3": build_tiny_idefics3(work / "models" / "idefics3"),
              "text": build_tiny_text_lm(work / "models" / "text")}
    return exports, models, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venvs", type=Path, default=ROOT / ".mmat" / "interop", help="Where the side venvs live (reused).")
    ap.add_argument("--no-results", action="store_true", help="Do not append to bench/RESULTS.md.")
    a = ap.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mmat-interop-"))
    exports, models, counts = build_exports(work)
    other_cwd = work / "elsewhere"  # consumers run from a working directory that is not the export folder
    other_cwd.mkdir()
    a.venvs.mkdir(parents=True, exist_ok=True)
    lf, swift = ensure_venv(a.venvs, "lf"), ensure_venv(a.venvs, "swift")
    versions = {}
    for label, py, mod in (("LLaMA-Factory", lf, "llamafactory"), ("ms-swift", swift, "swift")):
        versions[label] = _run([str(py), "-c", f"import {mod}, torch, transformers, datasets; print({mod}.__version__, "
                                              "torch.__version__, transformers.__version__, datasets.__version__)"]
                               ).stdout.strip()
    import trl
    import transformers

    versions["TRL"] = f"{trl.__version__} (mmat's venv, transformers {transformers.__version__})"
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows = {}
    lf_dir = exports / "llamafactory"
    rows["llamafactory sft (llava)"] = consumer(lf, LF_CHECK, [str(lf_dir), "sft", "mmat_sft", "llava", str(models["llava"])],
                                                offline, other_cwd)
    rows["llamafactory dpo (llava)"] = consumer(lf, LF_CHECK, [str(lf_dir), "rm", "mmat_dpo", "llava", str(models["llava"])],
                                                offline, other_cwd)
    rows["llamafactory sft (text LM, --text)"] = consumer(
        lf, LF_CHECK, [str(exports / "llamafactory_text"), "sft", "mmat_sft", "qwen", str(models["text"])], offline, other_cwd)
    sw_dir = exports / "swift"
    for kind in ("sft", "dpo"):
        rows[f"swift {kind} (llava1_5_hf)"] = consumer(
            swift, SWIFT_CHECK, [str(sw_dir), f"mmat_{kind}", str(models["llava"]), "llava1_5_hf"],
            {**offline, "ROOT_IMAGE_DIR": str(sw_dir)}, other_cwd)
    rows.update(trl_checks(exports, models, other_cwd))
    rows["parquet sft (mmat import mmat)"] = round_trip(exports / "parquet", work / "home2")

    def expected(name: str) -> int:
        fmt, kind = name.split()[0], name.split()[1]
        return counts[f"{fmt} {kind}{' --text' if '--text' in name else ''}"]

    lines = ["| consumer check | exported rows | loaded rows | detail | s |", "|---|---:|---:|---|---:|"]
    all_ok = True
    for name, r in rows.items():
        ok = "error" not in r and r.get("rows") == expected(name) and (r.get("encoded", r["rows"]) == r["rows"])
        all_ok &= ok
        detail = "; ".join(f"{k} {v}" for k, v in r.items() if k not in ("rows", "seconds", "error")) or ""
        if "error" in r:
            detail = "FAILED: " + " ".join(r["error"])[:200]
        lines.append(f"| {name} | {expected(name)} | {r.get('rows', '-')} | {'ok' if ok else 'MISMATCH'}; {detail} | {r['seconds']} |")
    table = "\n".join(lines)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    section = f"""
## interop — {stamp} (`python bench/interop.py`)

A fresh export — 3 SFT rows (one multimodal trajectory with two task images and an image made by a step, two
text-only ones, one of them kept by a person's label) and 1 step pair — loaded by the real consumers, each run from
a working directory that is not the export folder, and read back by `mmat import mmat`. Versions: {'; '.join(f'{k} {v}' for k, v in versions.items())}. {platform.machine()}, {os.cpu_count()} CPUs,
load avg {load:.1f}; total {time.monotonic() - started:.0f} s (venvs reused when present).
Students are tiny random models (LLaVA for LLaMA-Factory / ms-swift, Idefics3 and a Llama text LM for TRL).

{table}

Every format loads in every consumer: {'yes' if all_ok else 'NO — see the rows above'}.
"""
    print(section)
    if not a.no_results:
        with RESULTS.open("a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
