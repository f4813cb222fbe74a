"""What every response and every form of the web front gets: security headers, a body limit, CSRF.

- Headers: a CSP without inline script (pages load one same-origin script), no framing, no
  Referer (links carry tokens, which must not leak to the sites the papers link to), no sniffing,
  and no caching of pages that show someone's subscription.
- Body limit: forms are small; a larger body gets 413 before anything parses it.
- Forms: no cookie at all (a browser that refuses cookies can still sign up and unsubscribe). Every
  form carries a signed, time-limited form token (:func:`form_token`), so a post needs a page this
  site rendered in the last day; and a post a browser marks as coming from another site
  (``Sec-Fetch-Site``, else ``Origin``) is refused (:func:`cross_site`). That is what a CSRF cookie
  gave, without the cookie: another site can fetch a token, but a browser tells us where the post
  comes from. What a form changes is authorised by the signed link token it also carries (only the
  mailbox owner has it); the sign-up form changes nothing but sends one rate-limited email.
- Client addresses: ``X-Forwarded-For`` is read only from ``web.trusted_proxies``
  (:func:`client_address`); from anyone else it is the client's own claim.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# An archived digest is the email's HTML: inline styles, remote images, and no script at all.
ARCHIVE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; base-uri 'none'; " + (
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}

CSRF_FIELD = "csrf"
FORM_TOKEN_SECONDS = 24 * 3600  # a form left open overnight still works; an expired one is shown again
FORM_TOKEN_SKEW_SECONDS = 300
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Reads a request body up to ``limit`` bytes and hands it on; a larger one gets ``too_large``."""

    def __init__(self, app: ASGIApp, limit: int, too_large: Callable[[], ASGIApp]) -> None:
        self.app = app
        self.limit = limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self.too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self.too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _form_mac(secret: str, stamp: str) -> str:
    return hmac.new(secret.encode("utf-8"), b"form:" + stamp.encode("ascii"), hashlib.sha256).hexdigest()[:40]


def form_token(secret: str, now: float) -> str:
    """A form token: the time it was issued (8 hex digits) and an HMAC of it under the secret key."""
    stamp = f"{int(now):08x}"
    return stamp + _form_mac(secret, stamp)


def form_token_ok(secret: str, token: object, now: float, max_age: float = FORM_TOKEN_SECONDS) -> bool:
    """Issued by this site (the secret key) within ``max_age`` seconds of ``now``."""
    if not isinstance(token, str) or len(token) != 48:
        return False
    stamp, mac = token[:8], token[8:]
    try:
        issued = int(stamp, 16)
    except ValueError:
        return False
    if not hmac.compare_digest(mac, _form_mac(secret, stamp)):
        return False
    return -FORM_TOKEN_SKEW_SECONDS <= now - issued <= max_age


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site(headers: Headers, public_url: str) -> bool:
    """Whether the browser says this request comes from a page of another site.

    ``Sec-Fetch-Site`` (every current browser) is decisive. Without it, an ``Origin`` that is neither
    ``public_url``'s nor the host asked for is another site. ``Origin: null`` proves nothing: our
    own pages send it, because of ``Referrer-Policy: no-referrer``. Neither header (an old browser, a
    script): not a browser another site can drive, so the form token alone decides.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None or origin.strip().lower() == "null":
        return False
    origin = origin.strip().lower()
    if origin == origin_of(public_url):
        return False
    host = headers.get("host", "").lower()
    return not host or urlsplit(origin).netloc != host


def trusted_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``web.trusted_proxies`` as networks (the settings have already checked that each parses)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip().strip('"')
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:4711"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:4711"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's IP: the TCP peer, unless the peer is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right: each entry was appended by the hop after it,
    so the first entry not itself a trusted proxy is the client. Entries further left are whatever
    the client sent and are never read. Anything unreadable counts as the proxy itself.
    """
    if peer is None:
        return "unknown"
    address = _parse_ip(peer)
    if address is None or not trusted or not _trusted(address, trusted) or not forwarded_for:
        return peer
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = _parse_ip(hop)
        if hop_address is None:
            return str(address)
        address = hop_address
        if not _trusted(address, trusted):
            return str(address)
    return str(address)


FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def operator_client(peer: str | None, headers: Headers, trusted: Sequence[IPNetwork]) -> str | None:
    """The client of an operator-only answer (``/metrics``, ``/healthz`` details), or None to refuse.

    As :func:`client_address`, except where a proxy stands in front and does not say who the
    client is: a peer that is not a trusted proxy yet sends forwarding headers (a reverse proxy on
    this host that was not listed in ``web.trusted_proxies``: its requests come from 127.0.0.1,
    and the visitor behind it must not pass for loopback), or a trusted proxy whose
    ``X-Forwarded-For`` is unreadable where the client should be. A trusted peer that sends no
    ``X-Forwarded-For`` at all is taken as the client itself (a scrape from the proxy's host): a
    listed proxy must send the header (Caddy does; nginx needs ``proxy_set_header``).
    """
    if peer is None or (address := _parse_ip(peer)) is None:
        return None
    if not trusted or not _trusted(address, trusted):
        return None if any(headers.get(name) for name in FORWARDING_HEADERS) else peer
    hops = [hop for hop in ",".join(headers.getlist("x-forwarded-for")).split(",") if hop.strip()]
    if not hops:
        return peer
    client = address
    for hop in reversed(hops):
        parsed = _parse_ip(hop)
        if parsed is None:
            return None
        client = parsed
        if not _trusted(client, trusted):
            break
    return str(client)  # the first hop from the right that is not a proxy, or the last one there is


def rate_key(address: str) -> str:
    """The bucket of a client IP: itself, or its /64 for IPv6 (one host usually has the whole /64)."""
    parsed = _parse_ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address


def is_loopback(address: str) -> bool:
    parsed = _parse_ip(address)
    return parsed is not None and parsed.is_loopback
