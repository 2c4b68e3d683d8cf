"""Task files: the teacher writes Python that creates a non-image file, and fixes it after a traceback.

The code runs in mmat's sandbox (no network, an empty working directory), so the prompt lists the
libraries that exist there and how to reach them. Images are not drawn by the teacher: they come from
the captioned image pool, whose user folders can be captioned by a multimodal teacher (CaptionImage).
"""

from __future__ import annotations

import dspy

from mmat.signatures.queries import Modality

__all__ = ["WriteFileCode", "FixFileCode", "CaptionImage", "FILE_LIBRARIES"]

FILE_LIBRARIES = (
    "the Python standard library (csv, json, zipfile, datetime, random, ...), numpy, pandas, openpyxl (.xlsx), "
    "python-docx (.docx: import docx), python-pptx (.pptx: import pptx), fpdf2 (.pdf: from fpdf import FPDF; "
    "use the core font Helvetica and latin-1 text only), matplotlib (charts saved as PNG) and Pillow"
)


class WriteFileCode(dspy.Signature):
    __doc__ = f"""Write a Python script that creates one file for a task, with exactly the content described.

    The script runs with no network in an empty working directory. It must save the file in the current
    directory under the exact file name given, and it may use only {FILE_LIBRARIES}.
    Make the content realistic and self-consistent: plausible names, dates and numbers that agree with the
    description, so that the task can be answered from the file and from nothing else. Do not print the
    answer to the task and do not write it into the file unless the description says the file states it."""

    task: str = dspy.InputField(desc="The user request that the file belongs to.")
    file_name: str = dspy.InputField(desc="The exact name of the file to create, with its extension.")
    modality: Modality = dspy.InputField(desc="The kind of file.")
    content: str = dspy.InputField(desc="What the file must contain.")
    code: str = dspy.OutputField(desc="The complete Python script, with no explanations and no markdown fences.")


class FixFileCode(dspy.Signature):
    __doc__ = f"""Your Python script for creating a task file failed. Write a corrected version of the whole script.

    Read the error and change what caused it; keep everything that already worked. The script runs with no
    network in an empty working directory, must save the file in the current directory under the exact file
    name given, and may use only {FILE_LIBRARIES}."""

    task: str = dspy.InputField(desc="The user request that the file belongs to.")
    file_name: str = dspy.InputField(desc="The exact name of the file to create, with its extension.")
    modality: Modality = dspy.InputField(desc="The kind of file.")
    content: str = dspy.InputField(desc="What the file must contain.")
    previous_code: str = dspy.InputField(desc="The script that failed.")
    error: str = dspy.InputField(desc="What went wrong: the traceback, or what the file check found.")
    code: str = dspy.OutputField(desc="The complete corrected Python script, with no explanations and no markdown fences.")


class CaptionImage(dspy.Signature):
    """Describe the image for a searchable image catalogue, in one or two precise sentences.

    Say what the main subject is, then what matters for questions about it: readable text (quoted exactly),
    counts of objects, colours, and the setting. Describe only what is visible; do not guess names or places."""

    image: dspy.Image = dspy.InputField()
    caption: str = dspy.OutputField(desc="One or two sentences, at most 60 words.")
