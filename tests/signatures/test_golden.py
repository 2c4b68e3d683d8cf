"""Golden files of every signature's rendered prompt (ChatAdapter and JSONAdapter).

A signature's docstring and field descriptions are its prompt: any change to them shows up here as a
diff to review. Rewrite the files with ``MMAT_UPDATE_GOLDEN=1 pytest tests/signatures``.
"""

import json
import os
from pathlib import Path

import dspy
import pytest
from dspy.adapters.json_adapter import _get_structured_outputs_response_format

from mmat.signatures import (
    AGENTX_SIGNATURES,
    CandidateStep,
    CaptionImage,
    CodeAgentStep,
    FallbackAnswer,
    FileNeed,
    FixFileCode,
    GenerateQueries,
    Images,
    JudgeSteps,
    SeedExample,
    VerifyQueryFiles,
    VerifyTrajectory,
    WriteFileCode,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("MMAT_UPDATE_GOLDEN") == "1"
TINY_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="

TOOLS = "- ocr(image_path: str) -> str: Read the text in an image.\n- final_answer(answer: Any) -> nothing: Give the final answer."
NEED = FileNeed(modality="table", content="monthly expenses for March with columns category and amount", name_hint="march", format="csv")
EXAMPLE = SeedExample(domain="finance", query="Which category cost most in March?", tools=["inspect_file_as_text"],
                      files=[NEED], answer_type="short_text", expected_answer="rent")
PHOTO = Images.of([("crew_portrait.png", "files/crew_portrait.png")], inline=False)

CASES = {
    "GenerateQueries": (GenerateQueries, {"domain": "finance: budgets and receipts", "tools": TOOLS, "examples": [EXAMPLE], "n_queries": 2}),
    "WriteFileCode": (WriteFileCode, {"task": "Which category cost most in March?", "file_name": "march.csv", "modality": "table", "content": NEED.content}),
    "FixFileCode": (FixFileCode, {"task": "Which category cost most in March?", "file_name": "march.csv", "modality": "table", "content": NEED.content,
                                  "previous_code": "import pandas as pd\npd.DataFrame().to_csv('march.csv')", "error": "The script created 'march.csv', but the file is empty."}),
    "CaptionImage": (CaptionImage, {"image": dspy.Image(TINY_PNG)}),
    "CodeAgentStep.first": (CodeAgentStep, {"history": dspy.History(messages=[]), "task": "Read the name on the badge.", "files": "- crew_portrait.png (image)", "tools": TOOLS, "images": PHOTO}),
    "CodeAgentStep.later": (CodeAgentStep, {
        "history": dspy.History(messages=[{"task": "Read the name on the badge.", "files": "- crew_portrait.png (image)", "tools": TOOLS, "images": PHOTO,
                                           "thought": "OCR the photo.", "code": "print(ocr(image_path='crew_portrait.png'))"}]),
        "observation": "Output:\nCOLLINS"}),
    "FallbackAnswer": (FallbackAnswer, {"task": "Read the name on the badge.", "files": "- crew_portrait.png (image)", "steps": "Step 1\nThought: OCR it.\nCode:\n```python\nprint(ocr(image_path='crew_portrait.png'))\n```\nObservation:\nOutput:\nCOLLINS"}),
    "VerifyQueryFiles": (VerifyQueryFiles, {"query": "Whose name is on the badge in this photo?", "intended_tools": ["ocr"], "files": "1. crew_portrait.png (image, image/png)\nShown in images.", "images": PHOTO}),
    "VerifyTrajectory": (VerifyTrajectory, {"query": "Whose name is on the badge in this photo?", "files": "1. crew_portrait.png (image, image/png)\nImage description: an astronaut portrait",
                                            "steps": "Step 1\nThought: OCR it.\nCode:\n```python\nfinal_answer('Collins')\n```\nObservation:\nFinal answer given: Collins", "answer": "Collins", "expected_answer": "Collins"}),
    "JudgeSteps": (JudgeSteps, {"task": "Whose name is on the badge?", "files": "- crew_portrait.png (image)", "steps_so_far": "(no steps)",
                                "candidates": [CandidateStep(thought="OCR it.", code="print(ocr(image_path='crew_portrait.png'))", observation="Output:\nCOLLINS"),
                                               CandidateStep(thought="Guess.", code="final_answer('Armstrong')", observation="Final answer given: Armstrong")]}),
}


_AGENTX_VIEW = {
    "query": "How many cars are parked on the left?", "query_type": "objective",
    "reference_steps": "step 1: task: count cars | tool: CountGivenObject | input: {'object': 'car'} | output: 3 | thought: count them",
    "reference_answer": "3\n(justification: three cars are parked on the left)",
    "agent_steps": "step 1: task: print(visualizer(question='how many cars?', image_path='street.jpg')) | tool: CountGivenObject | output: 3 cars | thought: ask the VQA tool",
    "agent_answer": "3", "tool_descriptions": "{\"name\": \"ObjectCounter\", \"description\": \"counts objects\"}",
}
for _metric, _signature in AGENTX_SIGNATURES.items():
    CASES[f"AgentX.{_metric}"] = (_signature, {k: _AGENTX_VIEW[k] for k in _signature.input_fields})


def render(messages, schema=None) -> str:
    out = []
    for m in messages:
        out.append(f"=== {m['role']} ===")
        content = m["content"]
        if isinstance(content, str):
            out.append(content)
            continue
        for part in content:
            out.append(part["text"] if part["type"] == "text" else f"<image_url: {part['image_url']['url'][:60]}>")
    if schema is not None:
        out += ["=== response_format schema ===", json.dumps(schema, indent=2, sort_keys=True)]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("adapter_name", ["chat", "json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_prompt_matches_golden(case, adapter_name):
    signature, inputs = CASES[case]
    adapter = dspy.ChatAdapter() if adapter_name == "chat" else dspy.JSONAdapter()
    messages = adapter.format(signature, [], dict(inputs))
    schema = None
    if adapter_name == "json":
        schema = _get_structured_outputs_response_format(signature).model_json_schema()
    text = render(messages, schema)
    path = GOLDEN / f"{case}.{adapter_name}.txt"
    if UPDATE or not path.exists():
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing golden file {path.name}: review it and commit it")
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs: review, then MMAT_UPDATE_GOLDEN=1"


def test_every_signature_has_a_golden_case():
    import mmat.signatures as sigs

    names = {n for n in sigs.__all__ if isinstance(getattr(sigs, n), type) and issubclass(getattr(sigs, n), dspy.Signature)}
    covered = {sig.__name__ for sig, _ in CASES.values()}
    assert names == covered
