"""The signed links of one digest: view it online, manage one's rules, unsubscribe, and each paper's
"more like this" / "not for me" (one vote token per email, the paper and vote beside it in the link).

Each link carries a token for its one purpose and address (:mod:`digest.signing`); none expires.
So a forwarded digest hands its reader everything its links do for that address: read it online,
vote on its papers, unsubscribe, and through "Manage your rules" change the rules and choices,
pause, or see the personal feed address. The online copy is the email itself, Manage link
included, so a forwarded "View online" link carries the same; a lone vote link does not (its
"Noted" page shows no manage link).

Why one vote token: a token per paper and vote was two signatures (~25 µs each) per paper, a fifth
of a worker's time. The vote token names only the address (purpose ``vote``), and each link adds
``&p=<paper id>&v=1`` (or ``-1``) unsigned. So it lets its holder vote for that person on any
stored paper, not only the digest's; that is all it grants: votes only feed that person's
suggested rule changes, which change nothing until they accept one, and the same email's Manage
link grants more. The vote page shows only the stored title (an unknown id: "Paper no longer here").

A feed's paper ids run to hundreds of characters; the limits a vote link keeps to, and the links
themselves, are :mod:`digest.mail.votes`'s.
"""

from __future__ import annotations

from digest.mail.render import Links
from digest.models import Digest
from digest.signing import Signer


def digest_links(signer: Signer, base: str, digest: Digest) -> Links:
    """The links ``digest``'s email shows, under ``base`` (``public_url``)."""
    email = digest.subscriber.email
    view_token = signer.sign("digest", email, d=digest.digest_id)
    return Links(
        view_online=f"{base}/digest/{digest.digest_id}?token={view_token}",
        manage=f"{base}/manage?token={signer.sign('manage', email)}",
        unsubscribe=f"{base}/unsubscribe?token={signer.sign('unsubscribe', email)}",
        vote=vote_start(signer, base, email),
    )


def vote_start(signer: Signer, base: str, email: str) -> str:
    """What every vote link of an email for ``email`` starts with: one token for all of them,
    signed once here (the paper id and vote go after it: :mod:`digest.mail.votes`)."""
    return f"{base}/vote?token={signer.sign('vote', email)}&p="
