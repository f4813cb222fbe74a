"""``/vote``: where a digest's "more like this" / "not for me" links lead. GET shows the paper and a
button; only the button's POST records the vote.

Why a button: mail providers and corporate link scanners fetch every link of an email, both of a
paper's links included, and a vote recorded on GET would be theirs, not the reader's. The signed
token (:mod:`digest.signing`, purpose ``vote``) names the address; the paper and the vote come
beside it (``&p=…&v=1`` in the link, hidden fields of the form), one token per email being one
signature rather than two per paper (:mod:`digest.cycle.links`). A token from an older email names
them itself, and then they win over the query's. The POST also needs a form token and a request no
browser marks as cross-site, like every form here. One vote per person and paper, the latest press
kept; a leaver's link records nothing.

So a vote token lets its holder vote for that person on any stored paper, not only the digest's.
That is all: votes only feed that person's suggested rule changes on the manage page
(:mod:`digest.web.suggestions`), which change nothing until they accept one, and the same email's
Manage link grants more. The page shows only the stored title of a stored paper (any other id:
"Paper no longer here").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.errors import CycleLockedError, TokenError
from digest.mail.votes import MAX_VOTE_PAPER_CHARS, MAX_VOTE_URL_CHARS
from digest.state.backend import StoreBackend
from digest.text import first_control
from digest.web.forms import BUSY, FORM_EXPIRED
from digest.web.front import Front

log = logging.getLogger(__name__)

# A token is shorter than its link, and the email makes none longer (digest.mail.votes); a paper
# id up to what those links may name: a feed's ids (``name:`` + guid or link) run to hundreds.
MAX_TOKEN_CHARS = MAX_VOTE_URL_CHARS
MAX_PAPER_ID_CHARS = MAX_VOTE_PAPER_CHARS
LABELS = {1: "More like this", -1: "Not for me"}
VOTES = {"1": 1, "-1": -1}  # a link's ``v``, as written by digest.mail.votes: nothing else
SLOW_DOWN = "Too many votes from your network in the last minute. Please wait a minute and press again."


@dataclass(frozen=True, slots=True)
class Ballot:
    """What a vote link says: whose, which paper, which way (+1 "more like this", -1 "not for me")."""

    email: str
    paper: str
    vote: int

    @property
    def label(self) -> str:
        return LABELS[self.vote]


def read_ballot(front: Front, token: str | None, paper: object = None, vote: object = None) -> Ballot:
    """The vote a link carries: the token's address with ``paper`` and ``vote`` (the query's or the
    form's ``p`` and ``v``), or the paper and vote an older email's token names itself (then those
    win); :class:`TokenError` when forged, tampered, not a vote link, or ``p``/``v`` are not ours."""
    if token is not None and len(token) > MAX_TOKEN_CHARS:
        raise TokenError("this link is not valid")
    data = front.token_data("vote", token)
    if "p" in data or "v" in data:  # an email sent before the links carried them beside the token
        paper, vote = data.get("p"), data.get("v")
    else:
        vote = VOTES.get(vote) if isinstance(vote, str) else None
    if not isinstance(paper, str) or not 0 < len(paper) <= MAX_PAPER_ID_CHARS or type(vote) is not int:
        raise TokenError("this link is not valid")
    if first_control(paper) is not None:  # no id of ours has one (and PostgreSQL's text takes no NUL)
        raise TokenError("this link is not valid")
    if vote not in LABELS:
        raise TokenError("this link is not valid")
    return Ballot(str(data["e"]), paper, vote)


def record(store: StoreBackend, ballot: Ballot, at: datetime) -> str:
    """Record the ballot: "recorded", or why not: "left" (not subscribed), "gone" (paper not stored)."""
    if store.subscriber(ballot.email) is None:
        return "left"
    if store.item(ballot.paper) is None:
        return "gone"
    store.record_vote(ballot.email, ballot.paper, ballot.vote, at)
    return "recorded"


def paper_title(store: StoreBackend, ballot: Ballot) -> tuple[bool, str | None]:
    """Whether the ballot's address is subscribed, and the paper's title (None when not stored)."""
    item = store.item(ballot.paper)
    return store.subscriber(ballot.email) is not None, item.title if item else None


class Vote:
    """The vote page and its button."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def limited(self, request: Request) -> Response | None:
        """The "slow down" page when this client voted too often lately (a flood), else None."""
        front = self.front
        if front.limits.ip_votes.allow(front.client_ip(request), front.now_seconds()):
            return None
        page = front.message("Slow down", SLOW_DOWN, 429, show_home=True)
        page.headers["retry-after"] = "60"
        return page

    def refusal(self, subscribed: bool, title: str | None) -> HTMLResponse | None:
        """The page that says why nothing can be recorded, or None when the vote can be."""
        if not subscribed:
            return self.front.message(
                "Not subscribed",
                "This address is not subscribed (any more), so no vote was recorded. "
                "You can subscribe again from the front page.",
                404,
                show_home=True,
            )
        if title is None:
            return self.front.message(
                "Paper no longer here",
                "This paper is no longer stored here (it is too old, or the link is not one of ours), "
                "so no vote was recorded.",
                404,
                show_home=True,
            )
        return None

    def page(
        self, token: str, ballot: Ballot, title: str, status: int = 200, form_error: str | None = None
    ) -> Response:
        return self.front.page(
            "vote.html", status=status, token=token, ballot=ballot, title=title, form_error=form_error
        )

    async def show(self, request: Request) -> Response:
        """The paper, the vote, and the button: nothing is recorded by a GET."""
        limited = self.limited(request)
        if limited is not None:
            return limited
        query = request.query_params
        token = query.get("token")
        try:
            ballot = read_ballot(self.front, token, query.get("p"), query.get("v"))
        except TokenError as exc:
            return self.front.bad_link(exc, "vote")
        assert token is not None
        subscribed, title = await self.front.read(lambda store: paper_title(store, ballot))
        return self.refusal(subscribed, title) or self.page(token, ballot, str(title))

    async def post(self, request: Request) -> Response:
        """The button: record the vote, then say so and point to the suggestions."""
        limited = self.limited(request)
        if limited is not None:
            return limited
        form = await request.form()
        token = str(form.get("token", ""))
        try:
            ballot = read_ballot(self.front, token, form.get("p"), form.get("v"))
        except TokenError as exc:
            return self.front.bad_link(exc, "vote")
        subscribed, title = await self.front.read(lambda store: paper_title(store, ballot))
        refused = self.refusal(subscribed, title)
        if refused is not None:
            return refused
        problem = self.front.form_problem(request, form)
        if problem:
            if problem == FORM_EXPIRED:
                problem = "This page had expired, so nothing was recorded. Press the button again."
            return self.page(token, ballot, str(title), 400, problem)
        try:
            outcome = await self.front.write(lambda store: record(store, ballot, self.front.clock()))
        except CycleLockedError:
            return self.front.retry_later(self.page(token, ballot, str(title), 503, BUSY))
        refused = self.refusal(outcome != "left", None if outcome == "gone" else title)
        if refused is not None:  # they left, or the paper was pruned, while the page was open
            return refused
        log.info("recorded a vote through the web")
        # No manage link here: a vote link never expires and travels alone (forwarded, fetched by
        # a link scanner), so it must not turn into the rights of the digest's Manage link.
        return self.front.page("voted.html", ballot=ballot, title=title)
