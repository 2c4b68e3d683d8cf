"""A scripted synthesis world: teacher, verifier and controller answers as plain functions.

Used by the pipeline tests (through DummyLM), the kill -9 resume test (in a subprocess) and the
throughput benchmark (behind a loopback OpenAI-compatible server). Each seed's domain makes its
queries distinct, so near-duplicate filtering keeps them; one query per seed is deliberately vague
and the verifier rejects it, so every table sees both outcomes.

Per seed: 3 specs -> 2 verified tasks (a CSV task and an image + CSV task) + 1 rejected; each
trajectory takes 2 steps (inspect the CSV with a tool, then compute and answer).
"""

from __future__ import annotations

import re
import zlib
from typing import Any

__all__ = ["field", "teacher", "verifier", "agent", "register", "SPECS_PER_SEED", "VERIFIED_PER_SEED", "STEPS_PER_TRAJECTORY"]

SPECS_PER_SEED = 3
VERIFIED_PER_SEED = 2
STEPS_PER_TRAJECTORY = 2
VAGUE = "Tell me something interesting about the attached server log file and what it might mean for us"


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def field(messages: list[dict[str, Any]], name: str) -> str | None:
    """The value of input field ``name`` in the last user message (ChatAdapter format)."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond|\Z)", _text(messages[-1]), re.S)
    return match.group(1).strip() if match else None


def _rent(domain: str) -> int:
    return 900 + zlib.crc32(domain.encode()) % 100


def teacher(messages: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
    if fields == ["queries"]:
        domain = (field(messages, "domain") or "general").split("\n")[0][:60]
        table = {"modality": "table", "content": f"{domain} March expenses: rent {_rent(domain)}, food 412.5",
                 "name_hint": "march", "format": "csv"}
        return {"queries": [
            {"query": f"In the {domain} budget file, how much was spent on rent in March?",
             "intended_tools": ["inspect_file_as_text"], "file_needs": [table],
             "expected_answer_type": "number", "expected_answer": str(_rent(domain))},
            {"query": f"Looking at this photo and the {domain} expenses sheet, what was March's rent?",
             "intended_tools": ["inspect_file_as_text", "visualizer"],
             "file_needs": [{"modality": "image", "content": "an astronaut in a space suit", "name_hint": "photo"}, table],
             "expected_answer_type": "number", "expected_answer": str(_rent(domain))},
            {"query": f"{VAGUE} ({domain})?", "intended_tools": ["inspect_file_as_text"],
             "file_needs": [{"modality": "text", "content": "a short server log", "name_hint": "server", "format": "log"}],
             "expected_answer_type": "short_text", "expected_answer": None},
        ]}
    if fields == ["caption"]:
        return {"caption": "A photo."}
    name = field(messages, "file_name") or "out.txt"
    content = field(messages, "content") or ""
    if name.endswith(".csv"):
        rent = re.search(r"rent (\d+)", content)
        body = f"category,amount\\nrent,{rent.group(1) if rent else 950}\\nfood,412.5\\n"
    else:
        body = "INFO start\\nERROR disk full\\n"
    return {"code": f"open({name!r}, 'w').write('{body}')"}


def verifier(messages: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
    if "passed" in fields and "verdict" not in fields:
        vague = VAGUE in (field(messages, "query") or "")
        return {"reasons": ["too vague to check"] if vague else ["the files hold what the query needs"],
                "passed": not vague, "rewritten_query": None}
    answer = field(messages, "answer") or ""
    right = bool(re.fullmatch(r"\d+(\.\d+)?", answer.strip()))
    return {"reasons": ["answer read from the table"] if right else ["no numeric answer"],
            "verdict": "correct" if right else "incorrect", "score": 0.9 if right else 0.1}


def agent(messages: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
    if fields == ["answer"]:  # fallback answer when steps ran out
        return {"answer": "unknown"}
    files = field(messages, "files")
    if files is not None:  # first step: the task and files are in this turn
        csv_name = re.search(r"([\w.-]+\.csv)", files)
        name = csv_name.group(1) if csv_name else "march.csv"
        return {"thought": "Read the expenses table first.", "code": f"print(inspect_file_as_text({name!r}))"}
    return {"thought": "The rent row holds the answer.",
            "code": "import csv, glob\nrows = {r['category']: r['amount'] for r in csv.DictReader(open(glob.glob('*.csv')[0]))}\n"
                    "final_answer(rows['rent'])"}


def register(latency_s: float = 0.0) -> dict[str, Any]:
    """Register the three roles as DummyLM models dummy/teacher, dummy/verifier, dummy/agent."""
    from mmat.testing.dummy import DummyLM

    return {
        "teacher": DummyLM(teacher, name="teacher", latency_s=latency_s),
        "verifier": DummyLM(verifier, name="verifier", latency_s=latency_s),
        "agent": DummyLM(agent, name="agent", latency_s=latency_s),
    }
