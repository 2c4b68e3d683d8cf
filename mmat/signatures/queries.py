"""Task writing: the teacher invents user requests (queries) that need tools and files.

``QuerySpec`` is what the rest of the pipeline consumes: the request, the tools a good solution uses,
and a description of every attached file precise enough to retrieve it (images) or write it (other
files). All strings and lists are bounded so a schema-constrained local model cannot run on.
"""

from __future__ import annotations

from typing import Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Modality",
    "FileFormat",
    "AnswerType",
    "FileNeed",
    "QuerySpec",
    "SeedExample",
    "GenerateQueries",
    "MAX_QUERIES",
    "MAX_TOOLS_PER_QUERY",
    "MAX_FILES_PER_QUERY",
]

MAX_QUERIES = 5
MAX_TOOLS_PER_QUERY = 5
MAX_FILES_PER_QUERY = 3

Modality = Literal["image", "document", "table", "text", "code", "archive"]
FileFormat = Literal["png", "jpg", "pdf", "docx", "pptx", "html", "xlsx", "csv", "json", "txt", "md", "log", "py", "zip"]
AnswerType = Literal["number", "short_text", "long_text", "yes_no", "list", "image", "file"]


class FileNeed(BaseModel):
    """One file attached to a request, described well enough to find or create it."""

    model_config = ConfigDict(extra="forbid")

    modality: Modality = Field(
        description="image: a photo or picture; document: a PDF, DOCX or PPTX file; table: a CSV or XLSX file; "
        "text: a plain text, markdown or log file; code: a source code file; archive: a ZIP of other files."
    )
    content: str = Field(
        min_length=3,
        max_length=400,
        description="What the file must show or contain, concretely. For an image: the visible subject. For other "
        "files: the facts, names and numbers the request relies on.",
    )
    name_hint: str = Field(
        max_length=40, description="A short file name without extension, lowercase with underscores, e.g. march_expenses."
    )
    format: FileFormat | None = Field(
        default=None,
        description="The file format (extension): png or jpg for images; pdf, docx, pptx or html for documents; "
        "xlsx, csv or json for tables; txt, md, log or json for text; py for code; zip for archives.",
    )


class QuerySpec(BaseModel):
    """A user request together with the tools and files it needs."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=10,
        max_length=600,
        description="The request as the user would write it, referring to attached files as 'this photo', "
        "'the attached spreadsheet' and so on; it never names the tools.",
    )
    intended_tools: list[str] = Field(
        max_length=MAX_TOOLS_PER_QUERY,
        description="Names of the tools a good solution calls, taken from the tools list only, in the order of use.",
    )
    file_needs: list[FileNeed] = Field(
        max_length=MAX_FILES_PER_QUERY, description="The files attached to the request; an empty list when it needs none."
    )
    expected_answer_type: AnswerType = Field(
        description="number, short_text (a name, a date, a phrase), long_text (a summary or explanation), yes_no, "
        "list, image (an edited or generated picture) or file."
    )
    expected_answer: str | None = Field(
        default=None,
        max_length=200,
        description="The correct answer when it follows from the described file content; null when it cannot be "
        "known in advance.",
    )


class SeedExample(BaseModel):
    """A hand-written example request (``assets/seeds.json``) shown to the teacher for style."""

    model_config = ConfigDict(extra="forbid")

    domain: str
    query: str
    tools: list[str]
    files: list[FileNeed]
    answer_type: AnswerType
    expected_answer: str | None = None


class GenerateQueries(dspy.Signature):
    """Write new requests that a user could send to an AI assistant which solves tasks by writing Python code
    that calls the tools listed.

    Every request must:
    - be practical and concrete, about the given domain, with one answer that can be checked (a number, a name,
      a short text, yes or no, a list, or an edited or generated image);
    - need between 2 and 8 steps of code and tool calls, and really need the tools it lists;
    - attach the files it talks about, and describe in file_needs exactly what each file contains, so that the
      request can be answered from the files and the tools alone;
    - be written the way a user writes: it refers to "this photo" or "the attached table" and never names a tool.
    Do not copy or paraphrase the examples. Vary the tools, the file types and the kind of question."""

    domain: str = dspy.InputField(desc="The knowledge domain the requests are about.")
    tools: str = dspy.InputField(desc="The tools the assistant can call, with their arguments and what they return.")
    examples: list[SeedExample] = dspy.InputField(
        desc="Example requests that show the expected style and level of detail. Write different ones."
    )
    n_queries: int = dspy.InputField(desc="How many requests to write.")
    queries: list[QuerySpec] = dspy.OutputField(desc=f"Exactly n_queries new requests (at most {MAX_QUERIES}).")
