"""Rule checks: facts about a task or a trajectory that code can check, so no verifier model can be talked
out of them. They run before the LM verifiers; a subject that fails any rule is rejected without asking
the model, and a trajectory is ``correct`` only when the rules pass *and* the LM verifier passes.

Each check is a small function ``check(subject, options) -> reason | None`` (None = passed) with a name
and a one-line description (``TASK_CHECKS``, ``TRAJECTORY_CHECKS``; the README's rule table lists them).
A check that cannot run (an unreadable file, a bug) is a *failed* check whose reason says why: never a
crash, never a silent pass. ``Settings.rules_off`` turns individual checks off by name.

How the results are stored (``verdicts`` table), for readers such as ``mmat report``:

* **one row per verified subject with verifier = 'rules'** — ``subject_kind`` task | trajectory,
  ``model`` NULL, ``passed`` (no check failed), ``verdict`` 'pass' | 'reject', ``score`` NULL, and
  ``reasons``: a JSON list with one string per *failed* check, ``"<check name>: <reason>"`` (empty when
  passed). The check name is the text before the first ``": "``; count rejections per check with
  ``select split_part(r, ': ', 1) as check, count(*) from (select unnest(cast(reasons as varchar[])) as r
  from verdicts where verifier = 'rules') group by 1``.
* **one row with verifier = 'expected_answer'** per trajectory whose task has an expected answer: the
  answer compared with it by GAIA's scorer (``mmat.eval.ansacc.ans_acc_gaia``), ``model`` 'gaia',
  ``passed``/``score`` the scorer's exact result (1.0/0.0), ``verdict`` 'match' | 'mismatch'. This is
  the verifiable check, kept apart from the LM's opinion. The *rule* ``expected_answer`` is more
  lenient (a concise answer inside a sentence, "The rent was 950", is not a contradiction): it rejects
  only when no number or phrase of the answer matches under the same scorer.

``mmat synth`` writes one rules row per task and per trajectory; ``mmat verify`` adds new rows (new
ids, newest ``created_at``) and keeps the old ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mmat.errors import ConfigError
from mmat.programs.files import GeneratedFile
from mmat.programs.trajectory import Trajectory

__all__ = [
    "Check",
    "RuleOptions",
    "RuleFailure",
    "RuleVerdict",
    "TaskSubject",
    "TrajectorySubject",
    "ExpectedAnswerCheck",
    "TASK_CHECKS",
    "TRAJECTORY_CHECKS",
    "CHECK_NAMES",
    "check_task",
    "check_trajectory",
    "compare_expected",
    "rules_markdown",
    "read_regular_file",
]

MAX_READ_BYTES = 64 * 1024 * 1024  # a task file larger than this is not read by the checks (fails them)
MIN_QUERY_CHARS = 12
MAX_QUERY_CHARS = 1500
MIN_LETTER_SHARE = 0.5  # of the non-space characters of a query
REPEATED_CODE_LIMIT = 3  # the same code this many times is a loop, not a solution


# --- what the checks look at ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSubject:
    """A generated (or stored) task: the request, the tools its author intended, its files."""

    query: str
    intended_tools: Sequence[str] = ()
    files: Sequence[GeneratedFile] = ()
    available_tools: Sequence[str] | None = None  # None: every built-in tool


@dataclass(frozen=True)
class TrajectorySubject:
    """One agent run on a task. ``workspace``: the run's directory, when it still exists (answers that
    name a file are looked up there and among the files the steps reported)."""

    query: str
    trajectory: Trajectory
    intended_tools: Sequence[str] = ()
    answer_type: str | None = None
    expected_answer: str | None = None
    files: Sequence[GeneratedFile] = ()
    workspace: Path | None = None


@dataclass(frozen=True)
class RuleOptions:
    """The settings the checks read (``Settings.rules_*``)."""

    off: frozenset[str] = frozenset()
    allow_fallback: bool = False
    max_images: int = 3
    max_answer_chars: int = 2000

    @classmethod
    def from_settings(cls, settings: Any) -> RuleOptions:
        off = frozenset(settings.rules_off)
        unknown = sorted(off - set(CHECK_NAMES))
        if unknown:
            raise ConfigError(f"unknown rule check(s) in rules_off: {', '.join(unknown)}; "
                              f"choose from {', '.join(CHECK_NAMES)}.")
        return cls(off=off, allow_fallback=settings.rules_allow_fallback, max_images=settings.rules_max_images,
                   max_answer_chars=settings.rules_max_answer_chars)


@dataclass(frozen=True)
class Check:
    name: str
    subject: Literal["task", "trajectory"]
    description: str
    fn: Callable[[Any, RuleOptions], str | None] = field(repr=False)


class RuleFailure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    reason: str


class RuleVerdict(BaseModel):
    """The rule checks' result on one subject: passed when no check that ran failed."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    failures: list[RuleFailure] = []
    checked: list[str] = []

    @property
    def reasons(self) -> list[str]:
        """As stored in ``verdicts.reasons``: one ``"<check>: <reason>"`` per failed check."""
        return [f"{f.check}: {f.reason}" for f in self.failures]

    def failed(self, check: str) -> bool:
        return any(f.check == check for f in self.failures)


# --- reading files without trusting them -------------------------------------------------------------------
def read_regular_file(path: Path | str, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file, opened from its directory's fd with no symlink followed
    (``mmat.sandbox.safefs``): workspace files are untrusted, sandboxed code may have swapped one for a
    link or a FIFO."""
    from mmat.sandbox import safefs

    path = Path(path)
    with safefs.root(path.parent) as fd:
        return safefs.read_bytes(fd, path.name, limit)


def _read_in(workspace: Path | None, path: Path) -> bytes:
    """A file the agent's run made: opened from the workspace root's fd when it lies below it (no link
    followed on any component), else from its own directory's."""
    if workspace is not None:
        try:
            name = Path(path).relative_to(workspace)
        except ValueError:
            pass
        else:
            from mmat.sandbox import safefs

            with safefs.root(workspace) as fd:
                return safefs.read_bytes(fd, str(name), MAX_READ_BYTES)
    return read_regular_file(path)


class _Undecodable(ValueError):
    """The bounded decoder's own message (it names the exception, or the limit that stopped it)."""


def _decode_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image, decoded in the tools' bounded child (memory, time and pixel limits)."""
    from mmat.tools.bounded import BoundedFailure, run_bounded
    from mmat.tools.context import MAX_IMAGE_PIXELS

    try:
        size, _ = run_bounded("image", read_regular_file(path), MAX_IMAGE_PIXELS)
    except BoundedFailure as e:
        raise _Undecodable(e.message if e.kind == "error" else f"{e.kind}: {e.message}") from None
    return tuple(size)


def _why(e: BaseException) -> str:
    if isinstance(e, _Undecodable):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# --- task checks ----------------------------------------------------------------------------------------------
_IMAGE_NOUN = r"(?:photo(?:graph)?|image|picture|pic|screenshot|snapshot|scan)"
_FILE_NOUN = (r"(?:file|attachment|document|pdf|spreadsheet|csv|excel|workbook|docx|xlsx|pptx|slides?|slideshow|"
              r"presentation|deck|log\s+file|text\s+file|zip|archive)")
_WEAK_FILE_NOUN = r"(?:table|sheet|report|notes|log|list|chart|script|code|receipt|invoice|memo|letter|page)"
_DEICTIC = r"(?:this|these|that|those|the|both|each|every)"
_STRONG = r"(?:attached|provided|uploaded|enclosed|accompanying|included|given|following|supplied)"
_COUNT_WORDS = {"two": 2, "both": 2, "three": 3, "four": 4, "five": 5, "second": 2, "third": 3, "fourth": 4,
                "fifth": 5, "2": 2, "3": 3, "4": 4, "5": 5}
_GAP = r"(?:[\w-]+\s+){0,3}?"
_IMAGE_REF = re.compile(rf"\b(?:{_DEICTIC}|{_STRONG})\s+({_GAP}){_IMAGE_NOUN}(s?)\b", re.I)
_FILE_REF = re.compile(rf"\b(?:{_DEICTIC}\s+{_GAP}{_FILE_NOUN}|{_STRONG}\s+{_GAP}(?:{_FILE_NOUN}|{_WEAK_FILE_NOUN}))(s?)\b",
                       re.I)
_GENERIC_FILE_NOUN = re.compile(r"\b(?:files?|attachments?)\b", re.I)


def _images_referenced(query: str) -> int:
    """How many images the query refers to: 'this photo' 1, 'these photos'/'both pictures' 2, 'the third image' 3."""
    need = 0
    for m in _IMAGE_REF.finditer(query):
        words = m.group(0).lower().split()
        counts = [_COUNT_WORDS[w] for w in words if w in _COUNT_WORDS]
        need = max(need, max(counts) if counts else (2 if m.group(2) and words[0] in ("these", "those") else 1))
    return need


def check_files_attached(task: TaskSubject, options: RuleOptions) -> str | None:
    images = sum(1 for f in task.files if f.is_image)
    others = len(task.files) - images
    need_images = _images_referenced(task.query)
    generates = "image_generator" in task.intended_tools  # 'the picture' may be the one it is asked to make
    if need_images > images and not (generates and images == 0):
        return (f"the query refers to {need_images} image(s) but {images} "
                f"{'is' if images == 1 else 'are'} attached")
    refs = [m.group(0) for m in _FILE_REF.finditer(task.query)]
    if not refs:
        return None
    generic = all(_GENERIC_FILE_NOUN.search(r) for r in refs)
    have = len(task.files) if generic else others
    if have == 0:
        return f"the query refers to {refs[0]!r} but no {'file' if generic else 'non-image file'} is attached"
    return None


def check_images_decode(task: TaskSubject, options: RuleOptions) -> str | None:
    broken = []
    for f in task.files:
        if not f.is_image:
            continue
        try:
            width, height = _decode_image(Path(f.path))
            if width < 8 or height < 8:
                broken.append(f"{f.name}: only {width}x{height} pixels")
        except Exception as e:  # any decoder error is the finding itself
            broken.append(f"{f.name}: {_why(e)}")
    return ("image(s) that do not decode: " + "; ".join(broken)) if broken else None


def _known_tools(available: Sequence[str] | None) -> list[str]:
    if available is not None:
        return list(available)
    from mmat.tools import registered_tools

    return [t.name for t in registered_tools()]


def check_tools_available(task: TaskSubject, options: RuleOptions) -> str | None:
    from mmat.tools import final_tool_names

    known = set(_known_tools(task.available_tools)) | set(final_tool_names())
    unknown = [t for t in task.intended_tools if t not in known]
    return f"intended tool(s) not available: {', '.join(unknown)}" if unknown else None


def check_query_names_no_tool(task: TaskSubject, options: RuleOptions) -> str | None:
    named = [t for t in dict.fromkeys([*_known_tools(task.available_tools), *task.intended_tools])
             if re.search(rf"(?<![\w-]){re.escape(t)}(?![\w-])", task.query, re.I)]
    return f"the query names the tool(s) {', '.join(named)}: users ask for results, not tools" if named else None


def check_query_length(task: TaskSubject, options: RuleOptions) -> str | None:
    n = len(task.query.strip())
    if n < MIN_QUERY_CHARS:
        return f"the query has {n} characters (at least {MIN_QUERY_CHARS})"
    if n > MAX_QUERY_CHARS:
        return f"the query has {n:,} characters (at most {MAX_QUERY_CHARS:,})"
    return None


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") or "HIRAGANA" in unicodedata.name(ch, "") or "HANGUL" in unicodedata.name(ch, "")


def check_query_language(task: TaskSubject, options: RuleOptions) -> str | None:
    text = task.query.strip()
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return "the query is empty"
    letters = sum(c.isalpha() for c in chars) / len(chars)
    if letters < MIN_LETTER_SHARE:
        return f"only {letters:.0%} of the query's characters are letters: not natural language"
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3 and not any(_is_cjk(c) for c in chars):
        return f"the query has {len(words)} word(s): not a request"
    repeated = _repeated_phrase(words)
    if repeated:
        return f"the query repeats {repeated!r}"
    return None


TASK_CHECKS: tuple[Check, ...] = (
    Check("files_attached", "task", "every file the query refers to ('this photo', 'the attached table', 'both images') is attached", check_files_attached),
    Check("images_decode", "task", "every attached image decodes (and is at least 8x8 pixels)", check_images_decode),
    Check("tools_available", "task", "the intended tools are among the available tools", check_tools_available),
    Check("query_names_no_tool", "task", "the query does not name a tool", check_query_names_no_tool),
    Check("query_length", "task", f"the query has {MIN_QUERY_CHARS} to {MAX_QUERY_CHARS} characters", check_query_length),
    Check("query_language", "task", "the query reads as language: mostly letters, at least 3 words (or CJK), no phrase repeated", check_query_language),
)


# --- trajectory checks ----------------------------------------------------------------------------------------
def check_final_answer_called(run: TrajectorySubject, options: RuleOptions) -> str | None:
    t = run.trajectory
    if t.status == "answered":
        return None
    if options.allow_fallback and t.answer:
        return None
    why = {"fallback": "the steps ran out", "error_limit": "too many consecutive errors stopped it"}.get(t.status, t.status)
    return f"final_answer was never called ({why}; status {t.status}): the answer came from the fallback"


def check_last_step_clean(run: TrajectorySubject, options: RuleOptions) -> str | None:
    steps = run.trajectory.steps
    if steps and steps[-1].error:
        return f"the last step failed: {steps[-1].error[:200]}"
    return None


def check_intended_tool_called(run: TrajectorySubject, options: RuleOptions) -> str | None:
    from mmat.tools import is_final, without_final

    intended = without_final(run.intended_tools)
    if not intended:
        return None
    called = {c.name for s in run.trajectory.steps for c in s.tool_calls}
    if called & set(intended):
        return None
    used = sorted(n for n in called if not is_final(n))
    return (f"none of the intended tools ({', '.join(intended)}) was called"
            + (f"; it called {', '.join(used)}" if used else "; it called no tool"))


def check_answer_present(run: TrajectorySubject, options: RuleOptions) -> str | None:
    answer = run.trajectory.answer
    if answer is None:
        return "there is no answer"
    return "the answer is empty" if not answer.strip() else None


def check_answer_bounded(run: TrajectorySubject, options: RuleOptions) -> str | None:
    n = len(run.trajectory.answer or "")
    return f"the answer has {n:,} characters (at most {options.max_answer_chars:,})" if n > options.max_answer_chars else None


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])[-+]?(?:\d[\d,_]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_NUMBER_WORDS = re.compile(r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
                           r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
                           r"seventy|eighty|ninety|hundred|thousand|million|billion|dozen|half|none)\b", re.I)
_YES_NO = {"yes", "no", "yeah", "yep", "nope", "true", "false", "correct", "incorrect"}


def _produced_files(run: TrajectorySubject) -> set[str]:
    """Names of files the steps made: step images, and the 'New files:' line of each observation."""
    names = {Path(p).name for s in run.trajectory.steps for p in s.images}
    for s in run.trajectory.steps:
        for line in s.observation.splitlines():
            if line.startswith("New files: "):
                names.update(Path(n.strip()).name for n in line[len("New files: "):].split(","))
    return {n for n in names if n}


def _answer_names_file(run: TrajectorySubject, image: bool) -> str | None:
    from mmat.programs.files import IMAGE_SUFFIXES

    answer = run.trajectory.answer or ""
    produced = _produced_files(run)
    mentioned = {Path(tok).name for tok in re.findall(r"[\w./-]+\.\w{2,5}", answer)}
    if image:
        mentioned = {n for n in mentioned if Path(n).suffix.lower() in IMAGE_SUFFIXES}
    kind = "an image" if image else "a file"
    if not mentioned:
        return f"the answer should be {kind} but names no {'image ' if image else ''}file"
    if mentioned & produced:
        return None
    if run.workspace is not None:
        for name in mentioned:
            try:
                _read_in(run.workspace, run.workspace / name)
                return None
            except (OSError, ValueError):
                continue
    return f"the answer names {', '.join(sorted(mentioned))}, which no step produced"


def check_answer_type(run: TrajectorySubject, options: RuleOptions) -> str | None:
    answer = (run.trajectory.answer or "").strip()
    kind = run.answer_type
    if not answer or kind in (None, "short_text", "long_text", "list"):
        return None
    if kind == "number":
        ok = _NUMBER_IN_TEXT.search(answer) or _NUMBER_WORDS.search(answer)
        return None if ok else f"the answer should be a number but states none: {answer[:80]!r}"
    if kind == "yes_no":
        words = re.findall(r"[a-z]+", answer.lower())
        if words and (words[0] in _YES_NO or {"yes", "no"} & set(words[:12])):
            return None
        return f"the answer should be yes or no: {answer[:80]!r}"
    if kind in ("image", "file"):
        return _answer_names_file(run, image=kind == "image")
    return None


_PLACEHOLDER = re.compile(
    r"\{\s*[a-z_ ]{0,30}\s*\}|<\s*(?:answer|your[ _]answer|final[ _]answer)\s*>|\[\s*(?:insert|your|answer|placeholder)[^\]]*\]"
    r"|\byour answer here\b|\blorem ipsum\b|\bTODO\b|\[\[ ## |\bfinal_answer\(", re.I)
_EMPTY_WORDS = {"null", "undefined", "nan", "n/a", "na", "...", "tbd", "answer", "final answer", "none provided"}
_NON_ANSWER = re.compile(
    r"\byour task is (?:incomplete|not complete)|\bas an ai\b|\b(?:task|request) (?:is |was )?(?:incomplete|not completed)\b"
    r"|\b(?:cannot|can't|can not|unable to|could not|couldn't|am not able to|was not able to) "
    r"(?:answer|determine|complete|solve|help with|provide an answer|fulfil|fulfill)\b", re.I)


def _norm_words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _repeated_phrase(words: Sequence[str]) -> str | None:
    """A phrase of 1-8 words repeated at least 3 times that makes up most of the text, if any."""
    if len(words) < 6:
        return None
    for n in range(1, 9):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        if not grams:
            break
        gram, count = grams.most_common(1)[0]
        if count >= 3 and count * n >= 0.6 * len(words):
            return " ".join(gram)
    return None


def check_answer_not_degenerate(run: TrajectorySubject, options: RuleOptions) -> str | None:
    answer = (run.trajectory.answer or "").strip()
    if not answer:
        return None  # answer_present reports it
    if answer.lower().strip(" .") in _EMPTY_WORDS:
        return f"the answer is placeholder text: {answer!r}"
    if m := _PLACEHOLDER.search(answer):
        return f"the answer contains placeholder or template text {m.group(0)!r}"
    if m := _NON_ANSWER.search(answer):
        return f"the answer is not an answer: {m.group(0)!r}"
    words = _norm_words(answer)
    if phrase := _repeated_phrase(words):
        return f"the answer repeats {phrase!r} over and over"
    query = _norm_words(run.query)
    if query and len(query) >= 4:
        joined, q = " ".join(words), " ".join(query)
        if q in joined and len(words) <= len(query) * 1.3 + 3:
            return "the answer echoes the query"
    return None


def check_no_repeated_code(run: TrajectorySubject, options: RuleOptions) -> str | None:
    codes = Counter(" ".join(s.code.split()) for s in run.trajectory.steps if s.code.strip())
    if not codes:
        return None
    code, n = codes.most_common(1)[0]
    if n >= REPEATED_CODE_LIMIT:
        return f"the same code ran {n} times: {code[:80]!r}"
    return None


def check_not_all_steps_failed(run: TrajectorySubject, options: RuleOptions) -> str | None:
    steps = run.trajectory.steps
    if steps and all(s.error for s in steps):
        return f"every one of the {len(steps)} step(s) failed"
    return None


def _images(run: TrajectorySubject) -> list[tuple[str, Path]]:
    """(name, path) of the task's images, then of the images the steps produced."""
    task = [(f.name, Path(f.path)) for f in run.files if f.is_image]
    made = [(Path(p).name, Path(p) if Path(p).is_absolute() or run.workspace is None else run.workspace / p)
            for s in run.trajectory.steps for p in s.images]
    return task + made


def check_image_count(run: TrajectorySubject, options: RuleOptions) -> str | None:
    n = len(_images(run))
    if n > options.max_images:
        return f"{n} images (task files and step outputs) in one trajectory, more than {options.max_images}"
    return None


def check_no_duplicate_images(run: TrajectorySubject, options: RuleOptions) -> str | None:
    from mmat.ids import sha256_bytes

    seen: dict[str, str] = {}
    unreadable = []
    for name, path in _images(run):
        try:
            digest = sha256_bytes(_read_in(run.workspace, path))
        except (OSError, ValueError) as e:
            unreadable.append(f"{name}: {_why(e)}")
            continue
        if digest in seen:
            return f"images {seen[digest]} and {name} are the same picture"
        seen[digest] = name
    return ("image(s) that cannot be read: " + "; ".join(unreadable)) if unreadable else None


# --- the expected answer --------------------------------------------------------------------------------------
class ExpectedAnswerCheck(BaseModel):
    """The answer against the task author's expected answer, under GAIA's scorer.

    ``exact``: GAIA's question_scorer on the whole answer (the stored verifiable check).
    ``consistent``: the whole answer, or some number / the normalised expected phrase inside it, matches
    under the same scorer; the rule ``expected_answer`` rejects only answers that are not consistent."""

    model_config = ConfigDict(extra="forbid")

    scorer: str = "gaia"
    expected: str
    answer: str
    exact: bool
    consistent: bool

    @property
    def reason(self) -> str:
        outcome = "matches" if self.exact else ("contains" if self.consistent else "does not match")
        return f"answer {self.answer[:120]!r} {outcome} the expected {self.expected!r} (GAIA scorer)"


def compare_expected(answer: str | None, expected: str) -> ExpectedAnswerCheck:
    from mmat.eval.ansacc import ans_acc_gaia

    answer = answer or ""
    exact = bool(answer.strip()) and ans_acc_gaia(answer, expected)
    consistent = exact
    if not consistent and answer.strip():
        if _NUMBER_IN_TEXT.fullmatch(expected.strip()):
            consistent = any(ans_acc_gaia(m.group(0), expected) for m in _NUMBER_IN_TEXT.finditer(answer))
        else:
            phrase = " ".join(_norm_words(expected))
            consistent = bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)",
                                                    " ".join(_norm_words(answer))) is not None
    return ExpectedAnswerCheck(expected=expected, answer=answer, exact=exact, consistent=consistent)


def check_expected_answer(run: TrajectorySubject, options: RuleOptions) -> str | None:
    if not run.expected_answer or not (run.trajectory.answer or "").strip():
        return None
    result = compare_expected(run.trajectory.answer, run.expected_answer)
    return None if result.consistent else result.reason


TRAJECTORY_CHECKS: tuple[Check, ...] = (
    Check("final_answer_called", "trajectory", "final_answer was called (a fallback answer passes only with rules_allow_fallback)", check_final_answer_called),
    Check("last_step_clean", "trajectory", "the last step ran without an error", check_last_step_clean),
    Check("intended_tool_called", "trajectory", "at least one intended tool was called, when tools were intended", check_intended_tool_called),
    Check("answer_present", "trajectory", "there is a non-empty answer", check_answer_present),
    Check("answer_bounded", "trajectory", "the answer is at most rules_max_answer_chars long", check_answer_bounded),
    Check("answer_type", "trajectory", "the answer fits the expected type: a number for number, yes/no for yes_no, a produced file for image/file", check_answer_type),
    Check("answer_not_degenerate", "trajectory", "the answer is not placeholder text, a refusal, a phrase repeated or the query echoed", check_answer_not_degenerate),
    Check("no_repeated_code", "trajectory", f"no code ran {REPEATED_CODE_LIMIT} or more times", check_no_repeated_code),
    Check("not_all_steps_failed", "trajectory", "some step ran without an error (MAT's filter)", check_not_all_steps_failed),
    Check("image_count", "trajectory", "task images plus step images are at most rules_max_images (MAT: 3)", check_image_count),
    Check("no_duplicate_images", "trajectory", "no two images of the trajectory are the same bytes (MAT's filter)", check_no_duplicate_images),
    Check("expected_answer", "trajectory", "when the task has an expected answer, the answer does not contradict it under GAIA's scorer", check_expected_answer),
)

CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in (*TASK_CHECKS, *TRAJECTORY_CHECKS))


# --- running them ---------------------------------------------------------------------------------------------
def _run(checks: Sequence[Check], subject: Any, options: RuleOptions) -> RuleVerdict:
    failures, checked = [], []
    for check in checks:
        if check.name in options.off:
            continue
        checked.append(check.name)
        try:
            reason = check.fn(subject, options)
        except Exception as e:  # a check that cannot run is a failed check, never a crash or a pass
            reason = f"the check could not run: {_why(e)}"
        if reason is not None:
            failures.append(RuleFailure(check=check.name, reason=reason))
    return RuleVerdict(passed=not failures, failures=failures, checked=checked)


def check_task(task: TaskSubject, options: RuleOptions | None = None) -> RuleVerdict:
    """Every task check that is not turned off."""
    return _run(TASK_CHECKS, task, options or RuleOptions())


def check_trajectory(run: TrajectorySubject, options: RuleOptions | None = None) -> RuleVerdict:
    """Every trajectory check that is not turned off."""
    return _run(TRAJECTORY_CHECKS, run, options or RuleOptions())


def rules_markdown() -> str:
    """The README's rule table, generated from the checks (a test compares)."""
    lines = ["| check | on | passes when |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.subject} | {c.description} |" for c in (*TASK_CHECKS, *TRAJECTORY_CHECKS)]
    return "\n".join(lines)
