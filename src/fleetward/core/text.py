"""Free text that one party writes and others are shown: names, labels, notes.

Such text is refused, never cleaned, when it holds a character that is not printable in
Python's sense (:meth:`str.isprintable`): a control character (Cc, C0 and C1), a format
character (Cf: the bidi embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069,
zero-width characters, the byte order mark), a surrogate, a private-use or unassigned code
point, or a separator other than the ASCII space (line and paragraph separators, no-break and
other spaces). Those are what makes a name read differently from what it is (``Initech
\\u202egnp.exe`` shows as ``Initech exe.png``) or look like another one. Letters, marks,
digits, punctuation and symbols of any script are text.
"""

from __future__ import annotations

from collections.abc import Set


def is_printable_text(value: str, *, also: Set[str] = frozenset()) -> bool:
    """Whether every character of ``value`` is printable, or one of ``also`` (e.g. a
    note's line breaks and tabs)."""
    return all(c.isprintable() or c in also for c in value)


__all__ = ["is_printable_text"]
