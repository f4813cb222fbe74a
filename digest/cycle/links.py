"""The signed links of one digest: view it online, manage one's rules, unsubscribe, and each paper's
"more like this" / "not for me" (a token per paper and vote, signed when the email shows the paper).

Each link carries a token for its one purpose and address (:mod:`digest.signing`), so a forwarded
digest lets its reader unsubscribe that address, and nothing more.
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
        vote=lambda paper, vote: f"{base}/vote?token={signer.sign('vote', email, p=paper, v=vote)}",
    )
