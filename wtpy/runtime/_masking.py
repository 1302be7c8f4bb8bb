"""Masking secret values in hook output: every non-empty secret value of the webtask, and
the escaped spellings (JSON, repr, ...) a hook printing it inside a dict would show, read
MASK wherever they appear, longest first; a value cut at the end of a line by a size cap
is masked from its first character."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping

import orjson

from wtpy.contract import MASK

__all__ = ["MASK", "NO_MASK", "WORKER_CUT_MARK", "WORKER_TRUNCATED_PREFIX", "Masker", "masker"]


def _spellings(value: str) -> set[str]:
    """The value plus the escaped forms a hook printing a dict or JSON would show."""
    forms = {value}
    forms.add(orjson.dumps(value).decode("utf-8")[1:-1])  # JSON, UTF-8 kept
    forms.add(repr(value)[1:-1])  # Python repr (print of a dict or list)
    forms.add(json.dumps(value)[1:-1])  # JSON with ensure_ascii (\u00e9)
    forms.add(value.encode("unicode_escape").decode("ascii"))  # Python escapes (\xe9)
    forms.add(repr(value.encode("utf-8", "replace"))[2:-1])  # printed bytes (b'\xc3\xa9')
    return {form for form in forms if form}


# The worker's marker for an error message or stack it cut (see _worker.py).
WORKER_CUT_MARK = "... [truncated]"
# The worker's marker entry after the line where the per-invocation caps were hit.
WORKER_TRUNCATED_PREFIX = "[wtpy] output truncated"


@functools.lru_cache(maxsize=256)
def _masker_for(values: tuple[str, ...]) -> Masker:
    forms: set[str] = set()
    for value in values:
        forms |= _spellings(value)
    if not forms:
        return Masker(None, ())
    # Longest first: at each position the regex takes the first alternative that matches.
    ordered = tuple(sorted(forms, key=lambda form: (-len(form), form)))
    return Masker(re.compile("|".join(re.escape(form) for form in ordered)), ordered)


def masker(secrets: Mapping[str, str] | Iterable[str]) -> Masker:
    """A callable replacing every non-empty secret value (and its escaped forms) with MASK."""
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    return _masker_for(tuple(sorted({v for v in values if isinstance(v, str) and v})))


class Masker:
    __slots__ = ("_pattern", "_forms")

    def __init__(self, pattern: re.Pattern[str] | None, forms: tuple[str, ...]) -> None:
        self._pattern = pattern
        self._forms = forms

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(MASK, text)
        if WORKER_CUT_MARK in text:
            parts = text.split(WORKER_CUT_MARK)
            text = WORKER_CUT_MARK.join([self.cut(part) for part in parts[:-1]] + parts[-1:])
        return text

    def cut(self, text: str) -> str:
        """Mask a secret's beginning at the very end of `text` (a line cut by a size cap)."""
        if not self._forms or not text:
            return text
        best = 0
        for form in self._forms:
            window = text[-(len(form) - 1) :] if len(form) > 1 else ""
            start = window.find(form[0])
            while start != -1 and len(window) - start > best:
                if form.startswith(window[start:]):
                    best = len(window) - start
                    break
                start = window.find(form[0], start + 1)
        return text[:-best] + MASK if best else text


NO_MASK = Masker(None, ())  # for text that cannot hold a secret
