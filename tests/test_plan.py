"""Planning a cycle (pure): who gets which papers, in which order, on the bundled sample."""

from __future__ import annotations

from digest.cycle.plan import plan_digests
from digest.matching.ranking import rank_entries
from digest.matching.rules import ItemIndex, Matcher, parse_rules
from digest.models import DigestEntry, Subscriber
from tests.email_fixtures import AS_OF, sample_items

# Shared rules, rules that match the same papers (merged matches), an exclusion, a bad rule.
RULE_SETS = [
    ("4090",),
    ("video diffusion", "diffusion"),
    ("diffusion", "video diffusion"),
    ("4090", "gaussian splatting", "video"),
    ("video", "-diffusion"),
    ("title:video", "abstract:4090", "gpu*"),
    ("(",),
]


def test_each_digest_holds_its_subscribers_matches_ranked_minus_what_they_had() -> None:
    items = sample_items()
    first_day = min(item.listed_on for item in items)
    people = [Subscriber(f"s{n}@example.org", rules) for n, rules in enumerate(RULE_SETS * 3)]
    had = {"s1@example.org": {items[3].id, items[5].id}, "s10@example.org": {items[0].id}}

    plan = plan_digests(people, items, lambda email, since: had.get(email, set()), first_day, first_day, AS_OF)

    matcher = Matcher(ItemIndex(items))
    expected = {}
    for person in people:
        if person.rules == ("(",):
            continue
        found = matcher.match(parse_rules(person.rules))
        mine = [DigestEntry(items[d], m) for d, m in found.items() if items[d].id not in had.get(person.email, set())]
        if mine:
            expected[person.email] = rank_entries(mine)
    assert {d.subscriber.email: d.entries for d in plan.digests} == expected
    assert len(plan.digests) >= 15 and len(plan.rule_errors) == 3
    assert all(len({e.item.id for e in d.entries}) == len(d.entries) for d in plan.digests)
