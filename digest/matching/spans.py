"""Spans of matched text: (start, end) offsets into one field's text, from a match's highlights."""

from __future__ import annotations

from collections.abc import Iterable

from digest.models import Highlight


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def spans_for(highlights: Iterable[Highlight], field: str) -> list[tuple[int, int]]:
    return [(h.start, h.end) for h in highlights if h.field == field]
