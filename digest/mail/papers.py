"""One subscriber's view of each paper, and its HTML and text blocks: why it is there (the rules
it matched, the matched words in view), rendered once per paper and set of matches.

A word the abstract's excerpt leaves out is shown in a short snippet around it (:func:`_snippets`).
"""

from __future__ import annotations

from collections.abc import Sequence

from digest.mail.escape import escaped, html_in_ascii
from digest.mail.highlight import email_both, email_html, snippet_window, tidy
from digest.mail.templates import PAPER_SEPARATOR, TEXT_PAPER_SEPARATOR, email_templates
from digest.mail.text_lines import wrap
from digest.mail.views import PaperHtml, PaperView, item_view
from digest.matching.spans import merge_spans
from digest.models import DigestEntry, Highlight, RuleMatch
from digest.text import fold

SNIPPET_CHARS = 160  # the words around a match the excerpt leaves out
SNIPPETS_SHOWN = 3  # per paper at most: a size bound (each rule's words are usually one snippet)


def _label_order(field: str) -> tuple[bool, bool, str]:
    return (field != "title", field != "abstract", field)


def _rule_label(match: RuleMatch) -> str:
    """``rule (title, abstract)``: the rule and where it matched: the title, the abstract, then
    other fields (``author``, …) by name.

    A fixed order, not the set's: a set of strings iterates in an order that changes from one
    process to the next, and the same digest must read the same when it is rendered again.
    """
    where = sorted({h.field for h in match.highlights}, key=_label_order)
    return f"{match.rule} ({', '.join(where)})" if where else match.rule


def _word(text: str) -> str:
    """A matched text as compared for "already in view": as the rules read it (case, plurals and
    spacing aside: "Models" in the title shows a rule's "model" in the abstract). A word at a time
    through :func:`fold`, a dictionary lookup, as this runs for every match past the excerpt."""
    return fold(text) if " " not in text else " ".join(map(fold, text.split()))


def _snippets(entry: DigestEntry, shown: int) -> list[tuple[int, int]]:
    """Stretches of the abstract that put every matched word in view that the first ``shown``
    characters (the excerpt) and the title leave out, at most :data:`SNIPPETS_SHOWN`.

    The reader's first question is why a paper is there, and the answer is often the sentence
    the excerpt cut ("… 583 FPS on an RTX 4090 GPU"). A word is in view once the same text is
    marked anywhere the paper shows; each stretch is :func:`snippet_window` around the first
    word not yet in view, and puts the words inside it in view. Overlapping stretches are merged.
    """
    late: list[Highlight] = []
    shown_spans: list[Highlight] = []
    for match in entry.matches:
        for h in match.highlights:
            if h.field == "abstract":
                (late if h.end > shown else shown_spans).append(h)
            elif h.field == "title":
                shown_spans.append(h)
    if not late:
        return []
    item, text = entry.item, entry.item.abstract
    seen = {_word((text if h.field == "abstract" else item.title)[h.start : h.end]) for h in shown_spans}
    words = [(h.start, h.end, _word(text[h.start : h.end])) for h in late]
    words.sort()
    windows: list[tuple[int, int]] = []
    for start, end, word in words:
        if word in seen:
            continue
        if len(windows) == SNIPPETS_SHOWN:
            break
        begin, stop = snippet_window(text, start, end, SNIPPET_CHARS)
        windows.append((begin, stop))
        seen.update(other for first, last, other in words if begin <= first and last <= stop)
    return merge_spans(windows)


def _snippet(text: str, window: tuple[int, int], spans: list[tuple[int, int]]) -> tuple[str, str]:
    """The stretch ``window`` of ``text`` with "…" where it is cut, the spans inside it marked: as
    the HTML part writes it, and as the text part does (in lines)."""
    begin, end = window
    inside = [(max(s, begin) - begin, min(e, end) - begin) for s, e in spans if s < end and e > begin]
    html, plain = email_both(text[begin:end], inside)
    lead, tail = ("… " if begin > 0 else ""), (" …" if end < len(text) else "")
    return html_in_ascii(lead + html + tail), wrap(lead + plain + tail)


def _paper(entry: DigestEntry, layout: str) -> PaperView:
    """A paper's fields; its ``html`` block is filled in by :func:`render_papers`."""
    item = entry.item
    view = item_view(item)
    shown = view.summary_shown if layout == "compact" else view.abstract_shown
    title_spans = []
    abstract_spans = []
    for match in entry.matches:
        for h in match.highlights:
            if h.field == "title":
                title_spans.append((h.start, h.end))
            elif h.field == "abstract":
                abstract_spans.append((h.start, h.end))
    in_view = [span for span in abstract_spans if span[1] <= shown]
    snippets = [_snippet(item.abstract, window, abstract_spans) for window in _snippets(entry, shown)]
    rules = tuple(_rule_label(m) for m in entry.matches)
    compact = layout == "compact"
    block = PaperHtml(
        view.url_html,
        html_in_ascii(email_html(item.title, title_spans)),
        view.byline_html,
        view.facts_html,
        view.github_repo_html,
        tuple(escaped(rule) for rule in rules),
        "" if compact else html_in_ascii(email_html(view.abstract, in_view)),
        view.abstract_cut,
        html_in_ascii(email_html(view.summary, in_view)) if compact else "",
        tuple(html for html, _ in snippets),
        view.anchor,
    )
    return PaperView(
        view.title,
        view.url,
        view.byline,
        view.facts,
        view.github_repo,
        view.abstract,
        view.abstract_cut,
        view.title_wrapped,
        view.byline_wrapped,
        view.facts_wrapped,
        view.abstract_wrapped,
        wrap(tidy(view.summary)) if compact else "",  # the compact layout's alone
        rules,
        wrap("Matched: " + ", ".join(rules)),
        view.pick_text,
        tuple(text for _, text in snippets),
        view.anchor,
        block,
    )


def render_papers(entries: Sequence[DigestEntry], layout: str) -> list[PaperView]:
    """The views of ``entries`` with their HTML and text blocks, each part's in one template call.

    One call per paper would cost several times the block itself in Jinja's per-call set-up.
    """
    blocks = email_templates().blocks[layout]
    papers = [_paper(e, layout) for e in entries]
    htmls = blocks.papers.render(papers=[paper.escaped for paper in papers]).split(PAPER_SEPARATOR)
    if len(htmls) != len(papers) + 1:  # the separator is the template's alone; never expected
        raise RuntimeError(f"rendered {len(htmls) - 1} paper blocks for {len(papers)} papers")
    texts = blocks.text_papers.render(papers=papers).split(TEXT_PAPER_SEPARATOR)
    if len(texts) != len(papers) + 1:  # a feed's text held the separator: one call per paper then
        texts = [blocks.text_paper.render(paper=paper) for paper in papers]
    for paper, html, text in zip(papers, htmls, texts, strict=False):
        paper.html = html
        paper.text = text
    return papers
