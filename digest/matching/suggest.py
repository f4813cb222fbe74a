"""Rule changes suggested by a person's "more like this" / "not for me" votes. Pure: rules, papers and
votes in, readable suggestions out.

Why: people say "not this" far more readily than they learn a rule language, and a tool that
quietly re-weights from votes leaves them unable to see or undo why a paper stopped coming. So a
vote only ever becomes a *proposed* edit of one of their own rules, in the rule syntax, with what it
would have done to the last 30 days' papers, counted with the matcher ``digest try`` and the cycle
use; nothing changes until the person accepts it (:mod:`digest.web.vote`).

Two kinds: ``rule -word`` for a word that the rejected papers a rule matched share and the papers
they liked do not, and ``title:(rule)`` when the rule matched the rejected papers only in their
abstracts and the liked ones in their titles.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from digest.errors import RuleError
from digest.matching.rules import Budget, Decided, Decider, ItemIndex, OverBudget, Rule, parse_rule, parse_rules
from digest.matching.syntax import And, Not, Phrase, Scope
from digest.models import Item
from digest.text import cut_words, fold

MIN_REJECTED = 2  # a word two rejected papers share; one paper's words say little
CANDIDATES = 8  # words per rule whose effect is counted
MAX_EDITS = 120  # edits counted per computation at most (each a decision and a few set operations)
BUDGET_SECONDS = 5.0  # past this, the edits not counted yet are dropped (a visitor chooses the rules)
MAX_SHARE = 0.5  # a change that would remove more than this share of a rule's papers is too broad
SUGGESTIONS = 3
RECENT_DAYS = 30  # what the counts cover (the web reads that many days of stored papers)
_STOPWORDS = """about above after again against all also among an and any are as at based be been being both but by can
    could did do does each for from further had has have how however into is it its more most new no nor not of
    off on once only or other our out over own same show shows so some such than that the their them then there
    these they this those through to too under until up upon use used using very via was we were what when where
    which while who whose why will with within without would yet"""
STOPWORDS = frozenset(_STOPWORDS.split())


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One proposed edit: ``rule`` becomes ``changed``, and what that would have done.

    The counts are over the papers the person's current rules matched among the last
    :data:`RECENT_DAYS` days' (``matched``), and over the papers they voted on (wherever listed).
    """

    rule: str  # empty: ``changed`` is a rule of its own to add (an exclusion, for all the rules)
    changed: str
    matched: int
    removed: int
    rejected_removed: int
    liked_kept: int
    liked_lost: int

    def describe(self) -> str:
        """ "video diffusion → video diffusion -survey: removes 4 of 37 papers of the last 30 days,
        including the 2 you marked 'not for me'; keeps the 3 you liked"."""
        edit = f"{self.rule} → {self.changed}" if self.rule else f"add the rule {self.changed} (for all your rules)"
        text = (
            f"{edit}: removes {self.removed} of {self.matched} "
            f"{'paper' if self.matched == 1 else 'papers'} of the last {RECENT_DAYS} days"
        )
        if self.rejected_removed:
            text += f", including the {_count(self.rejected_removed, 'one')} you marked 'not for me'"
        if self.liked_kept:
            text += f"; keeps the {_count(self.liked_kept, 'one')} you liked"
        if self.liked_lost:
            text += f"; also removes {_count(self.liked_lost, 'one')} you liked"
        return text


def _count(n: int, one: str) -> str:
    return one if n == 1 else str(n)


@dataclass(slots=True)
class _Votes:
    """What the rules decide now over the recent and voted papers, the votes as docs, and what is
    left of the budget (see :func:`suggest`)."""

    decider: Decider
    recent: set[int]  # docs listed within the last RECENT_DAYS days
    before: set[int]  # docs the rules match now
    decided: dict[str, Decided]  # by (stripped) text, each rule that selects papers
    only: dict[str, set[int]]  # by rule text: docs of ``before`` that no other rule matches
    rejected: set[int]
    liked: set[int]
    edits_left: int
    counted: set[tuple[str, str]] = field(default_factory=set)
    words: dict[int, tuple[set[str], set[str]]] = field(default_factory=dict)

    def afford(self, rule: str, changed: str) -> bool:
        """Whether one more edit may be counted: each once, at most :data:`MAX_EDITS`, within the deadline."""
        if (rule, changed) in self.counted or self.edits_left <= 0:
            return False
        if time.monotonic() > self.decider.budget.deadline:
            self.edits_left = 0
            return False
        self.counted.add((rule, changed))
        self.edits_left -= 1
        return True


def suggest(
    rules: Sequence[str],
    recent: Sequence[Item],
    voted: Sequence[Item],
    votes: Mapping[str, int],
    limit: int = SUGGESTIONS,
    index: ItemIndex | None = None,
    seconds: float = BUDGET_SECONDS,
) -> list[Suggestion]:
    """At most ``limit`` suggested edits of ``rules``, the most rejected papers removed first.

    ``recent`` are the stored papers of the last :data:`RECENT_DAYS` days, ``voted`` the stored
    papers voted on (they may be older), ``votes`` paper id → +1 / -1. ``index``, if given, is
    ``ItemIndex(recent)`` already built (the web shares one: tokenizing a month of papers is most of
    the cost); it is used when every voted paper is among ``recent``. Rules that no longer parse
    give no suggestion (the manage page shows their problem). When no edit of one rule removes
    the rejected papers (several rules match them), a rule of its own is proposed instead,
    ``-word``, which removes from all the person's rules (``rule`` is then empty).

    Bounded, since a visitor can choose costly rules: an edit's effect is decided for the edited
    rule alone (what only that rule matched and its new form does not), each edit once, at most
    :data:`MAX_EDITS` of them and within ``seconds``; past that the remaining ones are dropped.
    """
    try:
        parsed = parse_rules(rules)
    except RuleError:
        return []
    try:
        state = _state(parsed, recent, voted, votes, index, Budget(deadline=time.monotonic() + seconds))
    except OverBudget:
        return []
    if len(state.rejected) < MIN_REJECTED:
        return []
    found: list[Suggestion] = []
    for rule in parsed:
        if not rule.is_exclusion:
            found.extend(_for_rule(rule, state))
    if not found:
        cap = MAX_SHARE * len(state.before & state.recent)
        try:
            words = _candidates(None, sorted(state.before & state.rejected), state.before & state.liked, state)
        except OverBudget:
            words = []
        found.extend(_best_word("", [(f"-{w}", t) for w, t in words if narrowed("x", w)], state, cap))
    found.sort(key=lambda s: (-s.rejected_removed, s.liked_lost, s.removed, s.changed))
    return found[:limit]


def _state(
    parsed: list[Rule],
    recent: Sequence[Item],
    voted: Sequence[Item],
    votes: Mapping[str, int],
    index: ItemIndex | None,
    budget: Budget,
) -> _Votes:
    """Withdrawn papers never match (as in ``digest try``); voted papers older than ``recent`` join the
    index. Which papers each rule matches is decided once, without highlights (never shown here)."""
    live = [item for item in recent if not item.withdrawn]
    known = {item.id for item in live}
    older = [item for item in voted if item.id not in known and not item.withdrawn]
    items = live + older
    doc_of = {item.id: doc for doc, item in enumerate(items)}
    shared = index is not None and not older and len(index.items) == len(recent) == len(live)
    decider = Decider(index if shared and index is not None else ItemIndex(items), budget)
    decided = {rule.text.strip(): decider.decide(rule.node) for rule in parsed if not rule.is_exclusion}
    excluded = [decider.decide(rule.excludes).docs for rule in parsed if rule.excludes is not None]
    before = set().union(*(d.docs for d in decided.values())).difference(*excluded)
    rules_of: Counter[int] = Counter()
    for found in decided.values():
        rules_of.update(found.docs & before)
    once = {doc for doc, n in rules_of.items() if n == 1}
    return _Votes(
        decider,
        set(range(len(live))),
        before,
        decided,
        {text: found.docs & once for text, found in decided.items()},
        {doc_of[p] for p, v in votes.items() if v < 0 and p in doc_of},
        {doc_of[p] for p, v in votes.items() if v > 0 and p in doc_of},
        MAX_EDITS,
    )


def _for_rule(rule: Rule, state: _Votes) -> list[Suggestion]:
    """The best ``-word`` edit of ``rule`` and its ``title:`` narrowing, where they help; only for a
    rule that matched at least :data:`MIN_REJECTED` of the rejected papers."""
    text = rule.text.strip()
    mine = state.decided[text].docs & state.before
    rejected = sorted(mine & state.rejected)
    if len(rejected) < MIN_REJECTED:
        return []
    share_cap = MAX_SHARE * len(mine & state.recent)
    try:
        words = _candidates(rule, rejected, mine & state.liked, state)
    except OverBudget:
        return []
    edits = [(changed, t) for w, t in words if (changed := narrowed(text, w)) is not None]
    out = _best_word(text, edits, state, share_cap)
    titled = _title_only(rule, rejected, mine & state.liked, state)
    if titled is not None:
        found = _effect(text, titled, state)
        if found is not None and found.rejected_removed and found.removed <= share_cap:
            out.append(found)
    return out


def _best_word(rule: str, edits: list[tuple[str, bool]], state: _Votes, cap: float) -> list[Suggestion]:
    """The best of ``edits`` (changed rule, whether its word is in every rejected title), or none.

    The most rejected papers removed; then a word of every rejected title ("survey"), which says
    what they are, before a rarer word of their abstracts; then the fewest papers removed. None
    that removes a liked paper or more than ``cap`` papers."""
    best: tuple[tuple[int, bool, int], Suggestion] | None = None
    for changed, in_every_title in edits:
        found = _effect(rule, changed, state)
        if found is None or not found.rejected_removed or found.liked_lost or found.removed > cap:
            continue
        key = (-found.rejected_removed, not in_every_title, found.removed)
        if best is None or key < best[0]:
            best = (key, found)
    return [best[1]] if best is not None else []


def _words(doc: int, state: _Votes) -> tuple[set[str], set[str]]:
    """The folded words of the title, and of title and abstract (cut once per paper)."""
    found = state.words.get(doc)
    if found is None:
        item = state.decider.index.items[doc]
        title = {fold(w) for w in cut_words(item.title)[0]}
        found = state.words[doc] = (title, title | {fold(w) for w in cut_words(item.abstract)[0]})
    return found


def _candidates(rule: Rule | None, rejected: list[int], liked: set[int], state: _Votes) -> list[tuple[str, bool]]:
    """Words that at least half (and two) of ``rejected`` share and no liked paper has, best first
    (in more of the rejected papers, in more of their titles, in fewer of the recent papers), each
    with whether every rejected title has it."""
    everywhere: Counter[str] = Counter()
    in_titles: Counter[str] = Counter()
    for doc in rejected:
        title, text = _words(doc, state)
        everywhere.update(text)
        in_titles.update(title)
    unwanted: set[str] = set()
    for doc in liked:
        unwanted |= _words(doc, state)[1]
    own = {fold(w) for w in cut_words(rule.text)[0]} if rule is not None else set()
    need = max(MIN_REJECTED, (len(rejected) + 1) // 2)
    words = [
        w
        for w, n in everywhere.items()
        if n >= need and w.isalpha() and len(w) >= 3 and w not in STOPWORDS and w not in unwanted and w not in own
    ]
    decide = state.decider.decide
    spread = {w: len(decide(parse_rule(w).node).docs & state.recent) for w in words}
    words.sort(key=lambda w: (-everywhere[w], -in_titles[w], spread[w], w))
    return [(w, in_titles[w] == len(rejected)) for w in words[:CANDIDATES]]


def narrowed(rule: str, word: str) -> str | None:
    """``rule`` with ``-word`` added (in parentheses where the rule needs them), or None when the
    word is not a plain word of the rule language (``and`` is one, ``NOT`` is not)."""
    try:
        node = parse_rule(word).node
        base = parse_rule(rule).node
    except RuleError:
        return None
    if not (isinstance(node, Phrase) and len(node.words) == 1):
        return None
    parts = base.children if isinstance(base, And) else (base,)
    for changed in (f"{rule} -{word}", f"({rule}) -{word}"):
        try:
            got = parse_rule(changed).node
        except RuleError:
            continue
        if isinstance(got, And) and got.children in ((*parts, Not(node)), (base, Not(node))):
            return changed
    return None


def _title_only(rule: Rule, rejected: list[int], liked: set[int], state: _Votes) -> str | None:
    """``title:(rule)`` when the rule found every rejected paper outside its title and every liked
    one (at least one) in it; None when not, or when the rule is scoped already."""
    if isinstance(rule.node, Scope) or not liked:
        return None
    text = rule.text.strip()

    in_title = state.decided[text].in_title
    if not in_title.isdisjoint(rejected) or not liked <= in_title:
        return None
    changed = f"title:({text})"
    try:
        got = parse_rule(changed).node
    except RuleError:
        return None
    return changed if got == Scope("title", rule.node) else None


def _effect(rule: str, changed: str, state: _Votes) -> Suggestion | None:
    """What the rules with ``rule`` changed into ``changed`` (added, when ``rule`` is empty) would
    have matched, against now: a paper goes when only ``rule`` matched it and ``changed`` does not
    (an added exclusion: when it names it). None when it cannot be counted (see :func:`suggest`)."""
    if not state.afford(rule, changed):
        return None
    try:
        edited = parse_rule(changed)
        if rule:
            gone = state.only[rule] - state.decider.decide(edited.node).docs
        else:
            gone = state.before & state.decider.decide(edited.excludes).docs if edited.excludes else set()
    except RuleError:
        return None
    except OverBudget:
        state.edits_left = 0
        return None
    before = state.before
    return Suggestion(
        rule=rule,
        changed=changed,
        matched=len(before & state.recent),
        removed=len(gone & state.recent),
        rejected_removed=len(gone & state.rejected),
        liked_kept=len((state.liked & before) - gone),
        liked_lost=len(gone & state.liked),
    )
