"""Safe names and messages: what a user's file name or an error becomes before the page, a CSV or the JSON API shows it
(control and direction characters removed, length bounded, the extension kept).
"""

import re
import unicodedata
from pathlib import Path
from typing import Any

from inspectkit.limits import MAX_NAME_CHARS

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def safe_name(name: Any, fallback: str = "image") -> str:
    """A harmless display name for an uploaded file: the last path component only, no control or
    bidirectional-override characters, whitespace collapsed, at most MAX_NAME_CHARS characters.

    ``../../etc/passwd`` becomes ``passwd``, ``C:\\x\\y.jpg`` becomes ``y.jpg``. Spreadsheet formulas are
    neutralised separately where it matters (the CSV), since ``=`` is a legal file-name character.
    """
    if name is None:
        return fallback
    text = unicodedata.normalize("NFC", str(name))
    text = re.split(r"[\\/]", text)[-1]
    text = _CONTROL.sub("", text)
    text = " ".join(text.split())
    if text in ("", ".", ".."):
        return fallback
    if len(text) > MAX_NAME_CHARS:
        stem, dot, ext = text.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 8 else ""
        text = text[: MAX_NAME_CHARS - len(ext) - 1] + "\u2026" + ext
    return text


def safe_text(text: Any, max_chars: int = 600) -> str:
    """A message fit to show anywhere (HTML after escaping, JSON, CSV, a toast): control and bidirectional
    characters become spaces, whitespace is collapsed, and it is cut at ``max_chars``. Error messages quote
    file names, so they need the same care as the names themselves."""
    text = " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", str(text))).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def error_message(error: Any, raw_name: Any = None, shown_name: str | None = None) -> str:
    """``error`` with the raw file name (as the decoder quoted it) replaced by the harmless one, made safe."""
    text = str(error)
    if raw_name:
        raw = re.split(r"[\\/]", str(raw_name))[-1]
        if raw and raw in text:
            text = text.replace(raw, shown_name or safe_name(raw))
    return safe_text(text)


def upload_name(path: Any) -> str:
    """The user's file name for a file Gradio stored in its cache (it keeps the original base name)."""
    return safe_name(Path(str(path)).name if path else None)
