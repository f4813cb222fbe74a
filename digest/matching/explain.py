"""Why a rule matched, for people at a terminal: the words, where they stand, highlighted in place.

Used by ``digest try`` so a subscriber can tune a rule on the papers already stored before relying
on it. Pure: items and matches in, :class:`rich.text.Text` out. Text from the feed goes into
``Text`` objects, never through rich markup, so a title such as ``[bold]`` prints as it is.
Piped into a file or another program there is no colour, so matches are marked ``[[4090]]``.
When a rule matches nothing, :func:`silent_parts` says which of its parts found nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text

from digest.matching.ranking import rank_entries
from digest.matching.rules import SEPARATOR, Decider, ItemIndex, Matcher, Rule, field_text, field_values
from digest.matching.spans import merge_spans
from digest.matching.syntax import TEXT_FIELDS, And, Node, Not, Or, Scope, show
from digest.models import DigestEntry, Highlight, Item, RuleMatch

MARK_STYLE = "bold black on yellow"
PLAIN_MARKS = ("[[", "]]")  # around a match where there is no colour
SNIPPET_CHARS = 320
OTHER_FIELDS = {
    "author": "authors",
    "org": "organization",
    "keyword": "keywords",
    "category": "categories",
    "source": "source",
}


@dataclass(frozen=True, slots=True)
class TryResult:
    """What ``digest try`` found: the ranked matches among ``considered`` papers."""

    rule: Rule
    entries: list[DigestEntry]
    considered: int
    silent: tuple[str, ...] = ()  # the parts of the rule that found nothing, when it matched nothing


def try_rule(rule: Rule, items: Sequence[Item]) -> TryResult:
    """Match one rule against ``items`` as a cycle would (withdrawn papers never match).

    An exclusion rule is shown by what it removes, since on its own it selects nothing.
    """
    live = [item for item in items if not item.withdrawn]
    matcher = Matcher(ItemIndex(live))
    matches: dict[int, tuple[RuleMatch, ...]]
    if rule.excludes is not None:
        hits = matcher.hits(rule.excludes)
        matches = {doc: (RuleMatch(rule.text.strip(), tuple(spans)),) for doc, spans in hits.items()}
    else:
        matches = matcher.match([rule])
    entries = rank_entries([DigestEntry(live[doc], found) for doc, found in matches.items()])
    silent = silent_parts(rule, matcher.decider) if not entries and live else ()
    return TryResult(rule, entries, len(live), silent)


def silent_parts(rule: Rule, decider: Decider) -> tuple[str, ...]:
    """The parts of ``rule`` (words, phrases, regular expressions, gates, with their field) that
    no paper has: why it matched nothing. Parts under NOT are left out: they remove, not find."""
    silent: list[str] = []

    def walk(node: Node, fields: tuple[str, ...], prefix: str) -> None:
        match node:
            case Scope(field, child):
                walk(child, (field,), f"{field}:")
            case Not(_):
                return
            case And(children) | Or(children):
                for child in children:
                    walk(child, fields, prefix)
            case _:
                if not decider.decide(node, fields).docs:
                    silent.append(prefix + show(node))

    walk(rule.excludes if rule.excludes is not None else rule.node, TEXT_FIELDS, "")
    return tuple(dict.fromkeys(silent))


def marked(text: str, spans: Iterable[tuple[int, int]], plain: bool = False) -> Text:
    """``text`` on one line (line breaks become spaces) with ``spans`` marked: in colour, or
    between ``[[`` and ``]]`` when ``plain`` (output that is not a terminal)."""
    flat = text.replace("\r", " ").replace("\n", " ")
    if plain:
        opening, closing = PLAIN_MARKS
        pieces, cursor = [], 0
        for start, end in merge_spans(spans):
            pieces.append(f"{flat[cursor:start]}{opening}{flat[start:end]}{closing}")
            cursor = end
        return Text("".join(pieces) + flat[cursor:])
    line = Text(flat)
    for start, end in merge_spans(spans):
        line.stylize(MARK_STYLE, start, end)
    return line


def snippet(text: str, spans: Sequence[tuple[int, int]], width: int = SNIPPET_CHARS, plain: bool = False) -> Text:
    """About ``width`` characters of ``text`` around its first marked span."""
    first = min((start for start, _ in spans), default=0)
    begin = max(0, first - width // 3) if first > width // 2 else 0
    end = min(len(text), begin + width)
    inside = [(max(s, begin) - begin, min(e, end) - begin) for s, e in spans if s < end and e > begin]
    part = marked(text[begin:end], inside, plain)
    if begin > 0:
        part = Text("…") + part
    if end < len(text):
        part.append("…")
    return part


def values_marked(item: Item, field: str, spans: Sequence[tuple[int, int]], plain: bool = False) -> Text:
    """A multi-valued field (authors, …) as ``a; b; c`` with ``spans`` (into its joined text) marked."""
    out = Text()
    offset = 0
    for number, value in enumerate(field_values(item, field)):
        if number:
            out.append("; ")
        inside = [(s - offset, e - offset) for s, e in spans if offset <= s and e <= offset + len(value)]
        out.append_text(marked(value, inside, plain))
        offset += len(value) + len(SEPARATOR)
    return out


def matched_words(item: Item, highlights: Iterable[Highlight]) -> str:
    """``"Video Diffusion" (title), "4090" (abstract)``: each matched text once per field."""
    seen: dict[tuple[str, str], str] = {}
    for h in highlights:
        words = " ".join(field_text(item, h.field)[h.start : h.end].split())
        seen.setdefault((words.casefold(), h.field), f"“{words}” ({h.field})")
    return ", ".join(seen.values())


def describe(entry: DigestEntry, plain: bool = False) -> list[Text]:
    """The lines that show one matched paper: title, facts, why, other matched fields, abstract."""
    item = entry.item
    highlights = [h for match in entry.matches for h in match.highlights]

    def spans(field: str) -> list[tuple[int, int]]:
        return [(h.start, h.end) for h in highlights if h.field == field]

    title = marked(item.title, spans("title"), plain)
    title.stylize("bold")
    facts = f"{item.listed_on.isoformat()} · ▲ {item.upvotes} · {item.comments} comments · {item.source} · {item.url}"
    why = matched_words(item, highlights)
    lines = [title, Text(facts, style="dim"), Text("matched: " + (why or "(no words: a gate such as upvotes>=N)"))]
    for field, label in OTHER_FIELDS.items():
        if spans(field):
            lines.append(Text(f"{label}: ") + values_marked(item, field, spans(field), plain))
    if item.abstract:
        lines.append(snippet(item.abstract, spans("abstract"), plain=plain))
    return lines


def summary(result: TryResult, start: str, end: str) -> str:
    if not result.considered:
        return f"No stored papers were listed {start} to {end}: try more --days, or another --date."
    count = len(result.entries)
    what = "are named by this exclusion" if result.rule.is_exclusion else "match"
    return f"{count} of {result.considered} stored papers listed {start} to {end} {what}."
