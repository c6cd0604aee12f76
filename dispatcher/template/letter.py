"""Letters: compile rendered Typst source to PDF for the print house.

Compilation is offline and sandboxed: Typst's project root is a fresh empty directory,
so ``#read``/``#image`` see no files, package imports are refused before Typst could
try to download them, and fonts come only from the given directories plus the fonts
embedded in Typst (system font discovery is off, so output does not depend on the
machine). Install ``fonts-noto-cjk`` for zh-CN letters.

Letters are written as PDF/A-2b (ISO 19005-2, level B): every font embedded, colours
device-independent, XMP metadata declaring the standard. A letter is evidence of what a
customer was told and may have to be produced years later; PDF/A is the archival form
courts and auditors accept, and it prints the same everywhere.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Final

import typst

from dispatcher.error import TemplateError

log = logging.getLogger(__name__)

DEFAULT_FONT_DIRS: Final = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
"""Searched when ``compile_pdf`` gets no ``font_paths`` (those that exist)."""

PDF_STANDARD: Final = "a-2b"
"""The PDF standard every letter is written in (PDF/A-2b, for archiving)."""

_PACKAGE_IMPORT: Final = re.compile(r"\b(?:import|include)\s+\"@")
_LOCATION: Final = re.compile(r"┌─ [^\n]*?:(\d+):(\d+)")


@lru_cache(maxsize=8)
def _fonts(paths: tuple[str, ...]) -> typst.Fonts:
    """Scan font directories once per process; scanning costs more than a compile."""
    return typst.Fonts(
        include_system_fonts=False, include_embedded_fonts=True, font_paths=list(paths)
    )


class _Compilers(threading.local):
    """One Typst compiler per thread and font set, reused across letters.

    Why: a compiler keeps Typst's caches (fonts, layout of unchanged parts) between
    compiles, which makes a letter about four times cheaper than with a fresh compiler.
    Its project root is an empty directory made for this process and never written to,
    so ``#read``/``#image`` still find nothing. One per thread because letters compile in
    worker threads (``asyncio.to_thread``).
    """

    def __init__(self) -> None:
        self.by_fonts: dict[tuple[str, ...], typst.Compiler] = {}


_COMPILERS = _Compilers()


_ROOT_LOCK = threading.Lock()
_ROOT: list[tempfile.TemporaryDirectory[str]] = []


def _empty_root() -> str:
    """The empty project root of this process's compilers (removed when it exits).

    Made once under a lock: two threads compiling their first letters at the same moment
    must not each make one, or the one left unreferenced is removed (with its folder)
    while the other thread's compiler still points at it.
    """
    with _ROOT_LOCK:
        if not _ROOT:
            _ROOT.append(tempfile.TemporaryDirectory(prefix="dispatcher-letter-"))
        return _ROOT[0].name


def _compiler(dirs: tuple[str, ...]) -> typst.Compiler:
    compiler = _COMPILERS.by_fonts.get(dirs)
    if compiler is None:
        root = _empty_root()
        compiler = typst.Compiler(
            root=root,
            font_paths=_fonts(dirs),
            ignore_system_fonts=True,
            package_path=root,
            package_cache_path=root,
        )
        _COMPILERS.by_fonts[dirs] = compiler
    return compiler


def default_font_paths() -> tuple[Path, ...]:
    """The default font directories that exist on this machine."""
    return tuple(p for p in DEFAULT_FONT_DIRS if p.is_dir())


def compile_pdf(
    typst_source: str,
    *,
    font_paths: Sequence[Path] = (),
    timestamp: datetime | None = None,
) -> bytes:
    """Compile a rendered letter (Typst source) to PDF bytes.

    Why a separate step from rendering: the planner renders and stores the source (its
    hash goes on the message); the PDF is produced when the letter is sent or previewed.
    ``timestamp`` fixes the PDF creation date (pass one to get byte-identical output).
    The PDF is PDF/A-2b (:data:`PDF_STANDARD`): what cannot be archived, e.g. a font
    that may not be embedded, is a TemplateError, never a non-conforming letter.
    Raises TemplateError with Typst's message and source position (never the source
    text, which holds personal data).
    """
    if _PACKAGE_IMPORT.search(typst_source):
        raise TemplateError("letter imports a Typst package; letters must compile offline")
    dirs = tuple(str(p) for p in (font_paths or default_font_paths()))
    try:
        pdf, warnings = _compiler(dirs).compile_with_warnings(
            input=typst_source.encode("utf-8"),
            format="pdf",
            timestamp=timestamp,
            pdf_standards=[PDF_STANDARD],
        )
    except typst.TypstError as exc:
        raise TemplateError(f"letter does not compile: {_describe(exc)}") from exc
    for warning in warnings:
        log.warning("typst warning in letter: %s", _describe(warning))
    if not isinstance(pdf, bytes):
        raise TemplateError("letter compiled to several documents, expected one PDF")
    return pdf


def _describe(problem: typst.TypstError | typst.TypstWarning) -> str:
    text = problem.message
    location = _LOCATION.search(problem.diagnostic or "")
    if location is not None:
        text = f"line {location.group(1)}, column {location.group(2)}: {text}"
    if problem.hints:
        text += " (" + "; ".join(problem.hints) + ")"
    return text
