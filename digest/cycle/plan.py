"""Who gets what: a cycle's plan, from the stored items and each subscriber's rules.

Pure but for :func:`plan_from_store`, which reads the store; ``digest status`` shows the same plan
as what is pending, so what it says and what the next cycle sends cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
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


@dataclass(slots=True)
class Candidates:
    """The papers a cycle may offer, indexed once and shared by every subscriber it plans (also
    across the scheduler's slices, :func:`plan_in_slices`)."""

    live: list[Item]
    listed_on: list[date]
    ids: list[str]
    matcher: Matcher
    # (doc, rule) → a one-rule match's entry and rank key: made once, not once per subscriber
    shared: dict[tuple[int, str], tuple[DigestEntry, RankKey]] = field(default_factory=dict)


def candidates(items: Sequence[Item], floor: date, as_of: date) -> Candidates:
    live = [i for i in items if not i.withdrawn and i.listed_on <= as_of and i.listed_on >= floor]
    return Candidates(live, [i.listed_on for i in live], [i.id for i in live], Matcher(ItemIndex(live)))


def plan_digests(
    subscribers: Sequence[Subscriber],
    items: Sequence[Item],
    delivered: Callable[[str, date], set[str]],
    window_start: date,
    floor: date,
    as_of: date,
) -> Plan:
    """Pure: who gets which items. ``items`` are the candidates from the store (any horizon)."""
    return plan_for(candidates(items, floor, as_of), subscribers, delivered, window_start, floor, as_of)


def plan_for(
    found: Candidates,
    subscribers: Sequence[Subscriber],
    delivered: Callable[[str, date], set[str]],
    window_start: date,
    floor: date,
    as_of: date,
) -> Plan:
    """Pure: who among ``subscribers`` gets which of ``found``.

    Each digest is ranked as :func:`rank_entries` ranks it. A paper matched by one rule is the
    same entry in the digest of everyone with that rule, so its entry and rank key are made once
    per (paper, rule), not once per subscriber: they were most of planning's time.
    """
    plan = Plan()
    live, listed_on, ids, shared = found.live, found.listed_on, found.ids, found.shared
    plan.nothing_for += [s for s in subscribers if not s.by_email]  # feed only: no email, moved on as on a quiet day
    for subscriber in (s for s in subscribers if s.by_email):
        rules, refused = usable_rules(subscriber.rules)
        plan.rule_errors += [f"{subscriber.email}: {exc}" for exc in refused]
        if not rules:
            continue
        horizon = max(floor, min(window_start, subscriber.caught_up_to or window_start))
        already = delivered(subscriber.email, horizon)
        chosen = []
        for doc, matches in found.matcher.match(rules).items():
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
    plans = list(plan_in_slices(store, window_start, as_of, select, slice_size=None))
    return plans[0] if plans else Plan()


def plan_in_slices(
    store: StoreBackend,
    window_start: date,
    as_of: date,
    select: Callable[[Subscriber], bool] | None,
    slice_size: int | None,
) -> Iterator[Plan]:
    """:func:`plan_from_store`, ``slice_size`` subscribers at a time over one shared index (None:
    everyone at once). Each plan is made when asked for: ``digest scheduler`` queues one slice
    before it plans the next, so it holds one slice's digests (a whole 100,000-subscriber plan
    peaked at 361 MB, ``bench/postgres.md``) and the workers start on the first slice at once."""
    floor = store.candidate_floor()
    subscribers = [s for s in store.subscribers(active_only=True) if select is None or select(s)]
    if not subscribers:  # nobody due this tick: no items to read
        return
    start = candidate_start(subscribers, window_start, floor)
    found = candidates(store.items_listed_between(start, as_of), floor, as_of)
    if slice_size is None:
        yield plan_for(found, subscribers, store.delivered_ids, window_start, floor, as_of)
        return
    for at in range(0, len(subscribers), slice_size):
        people = subscribers[at : at + slice_size]
        # A slice's deliveries in one read (a query per person was a round trip each on PostgreSQL);
        # those listed before someone's own horizon are more than they need, and skipped by it.
        delivered = store.delivered_to([s.email for s in people if s.by_email], start)
        yield plan_for(found, people, read_from(delivered), window_start, floor, as_of)


def read_from(delivered: dict[str, set[str]]) -> Callable[[str, date], set[str]]:
    """``delivered`` (lower-cased address → ids) as :func:`plan_for` asks for it."""
    return lambda email, _horizon: delivered[email.lower()]
