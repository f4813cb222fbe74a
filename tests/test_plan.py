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


def test_a_stored_rule_that_no_longer_parses_is_left_out_and_the_person_told() -> None:
    """A rule accepted once and refused now (a regex past today's window) must not cost the person
    their other rules' papers: those still come, with a note naming the rule left out."""
    items = sample_items()
    first_day = min(item.listed_on for item in items)
    stale = "/e.{30}e.{30}zq/i"
    people = [
        Subscriber("kept@example.org", ("video", stale, "-survey")),
        Subscriber("only-stale@example.org", (stale,)),
        Subscriber("stale-and-exclusion@example.org", (stale, "-survey")),
    ]

    plan = plan_digests(people, items, lambda email, since: set(), first_day, first_day, AS_OF)

    (digest,) = plan.digests
    assert digest.subscriber.email == "kept@example.org"
    wanted = Matcher(ItemIndex(items)).match(parse_rules(["video", "-survey"]))
    assert digest.entries == rank_entries([DigestEntry(items[d], m) for d, m in wanted.items()])
    (note,) = digest.notices
    assert note.startswith(f"Your rule “{stale}” was left out of this digest: the regular expression")
    assert "Change it on your subscription page" in note
    assert len(plan.rule_errors) == 3 and all("needs 60 characters" in e for e in plan.rule_errors)
    assert [s.email for s in plan.nothing_for] == []  # nobody with nothing usable is moved on
