"""The text part's lines: greedy word wrap, and lists of parts that never break inside a part."""

from __future__ import annotations

from collections.abc import Sequence

TEXT_WIDTH = 73  # the text part's lines: 4 columns of indent + 73 < 78
INDENT = "    "


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = INDENT) -> str:
    """Greedy word wrap for the text part, continuation lines indented.

    Each line is the longest run of whole words that fits in ``width``: found with one ``rfind``
    per line (C, not a Python step per word: wrapping was most of a render's time); a word longer
    than the line stays whole (a URL must not be cut). Runs of whitespace become one space.
    """
    # Most texts come with single spaces already (sources squash whitespace): skip the split then.
    plain = text.isprintable() and "  " not in text and text.strip(" ") == text
    words = text if plain else " ".join(text.split())
    if len(words) <= width:
        return words
    lines = []
    start = 0
    while len(words) - start > width:
        cut = words.rfind(" ", start, start + width + 1)
        if cut < 0:  # the next word alone is longer than a line
            cut = words.find(" ", start)
            if cut < 0:
                break
        lines.append(words[start:cut])
        start = cut + 1
    lines.append(words[start:])
    return ("\n" + indent).join(lines)


def wrap_parts(parts: Sequence[str], width: int = 76, separator: str = " · ") -> str:
    """``parts`` joined by ``separator`` in lines of at most ``width``, broken only between parts
    (a part longer than a line is word-wrapped), a line that goes on ending with the separator:
    "“video diffusion”: 9" never leaves its number alone on the next line."""
    lines: list[str] = []
    line = ""
    for part in parts:
        joined = f"{line}{separator}{part}" if line else part
        if len(joined) <= width or not line:
            line = joined
        else:
            lines.append(line + separator.rstrip())
            line = part
    lines.append(line)
    return "\n".join(wrap(line, width, "") for line in lines)
