"""Who gets what: a cycle's plan, from the stored items and each subscriber's rules.

Pure but for :func:`plan_from_store`, which reads the store; ``digest status`` shows the same plan
as what is pending, so what it says and what the next cycle sends cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter

from digest.errors import RuleError
from digest.matching.ranking import RankKey, rank_key
from digest.matching.rules import ItemIndex, Matcher, usable_rules
from digest.models import Digest, DigestEntry, Item, Subscriber
from digest.state.backend import StoreBackend


@dataclass(slots=True)
class Plan:
    """What a cycle will send: digests to deliver and the subscribers with nothing to send."""

    digests: list[Digest] = field(default_factory=list)
    nothing_for: list[Subscriber] = field(default_factory=list)
    rule_errors: list[str] = field(default_factory=list)


def digest_id(email: str, as_of: date, items: Sequence[Item]) -> str:
    """The same for the same person, day and papers: a re-planned digest keeps its archive name."""
    seed = "|".join([email.lower(), as_of.isoformat(), *sorted(i.id for i in items)])
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:20]


def plan_digests(
    subscribers: Sequence[Subscriber],
    items: Sequence[Item],
    delivered: Callable[[str, date], set[str]],
    window_start: date,
    floor: date,
    as_of: date,
) -> Plan:
    """Pure: who gets which items. ``items`` are the candidates from the store (any horizon).

    Each digest is ranked as :func:`rank_entries` ranks it. A paper matched by one rule is the
    same entry in the digest of everyone with that rule, so its entry and rank key are made once
    per (paper, rule), not once per subscriber: they were most of planning's time.
    """
    plan = Plan()
    live = [i for i in items if not i.withdrawn and i.listed_on <= as_of and i.listed_on >= floor]
    listed_on = [i.listed_on for i in live]
    ids = [i.id for i in live]
    matcher = Matcher(ItemIndex(live))
    shared: dict[tuple[int, str], tuple[DigestEntry, RankKey]] = {}  # (doc, rule) → a one-rule match's entry
    plan.nothing_for += [s for s in subscribers if not s.by_email]  # feed only: no email, moved on as on a quiet day
    for subscriber in (s for s in subscribers if s.by_email):
        rules, refused = usable_rules(subscriber.rules)
        plan.rule_errors += [f"{subscriber.email}: {exc}" for exc in refused]
        if not rules:
            continue
        horizon = max(floor, min(window_start, subscriber.caught_up_to or window_start))
        already = delivered(subscriber.email, horizon)
        chosen = []
        for doc, matches in matcher.match(rules).items():
            if listed_on[doc] < horizon or ids[doc] in already:
                continue
            made = shared.get((doc, matches[0].rule)) if len(matches) == 1 else None
            if made is None:
                entry = DigestEntry(live[doc], matches)
                made = (entry, rank_key(entry))
                if len(matches) == 1:
                    shared[doc, matches[0].rule] = made
            chosen.append(made)
        if not chosen:
            plan.nothing_for.append(subscriber)
            continue
        chosen.sort(key=itemgetter(1))
        ranked = [entry for entry, _ in chosen]
        made_digest = Digest(subscriber, ranked, as_of, digest_id(subscriber.email, as_of, [e.item for e in ranked]))
        made_digest.notices += [left_out_notice(exc) for exc in refused]
        plan.digests.append(made_digest)
    return plan


def left_out_notice(error: RuleError) -> str:
    """What the digest tells a person whose stored rule no longer parses (see :func:`usable_rules`)."""
    return (
        f"Your rule “{error.rule}” was left out of this digest: {error.reason}. "
        "Change it on your subscription page (the Manage link below)."
    )


def candidate_start(subscribers: Sequence[Subscriber], window_start: date, floor: date) -> date:
    """The earliest listing day anyone may still be offered: the store reads no older items."""
    starts = [min(window_start, s.caught_up_to or window_start) for s in subscribers if s.by_email]
    return max(floor, min(starts, default=window_start))


def plan_from_store(
    store: StoreBackend, window_start: date, as_of: date, select: Callable[[Subscriber], bool] | None = None
) -> Plan:
    """What a cycle would send now from the items already stored (also ``digest status``'s pending).

    ``select`` picks whose digest is due (:class:`digest.cycle.rhythm.Due`); the others are not
    planned at all, so their papers stay candidates for their own day. None: everyone."""
    floor = store.candidate_floor()
    subscribers = [s for s in store.subscribers(active_only=True) if select is None or select(s)]
    if not subscribers:  # nobody due this tick: no items to read
        return Plan()
    start = candidate_start(subscribers, window_start, floor)
    candidates = store.items_listed_between(start, as_of)
    return plan_digests(subscribers, candidates, store.delivered_ids, window_start, floor, as_of)
