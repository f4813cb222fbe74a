"""digest.mail split by job (issue 24): one escape path on public APIs, templates as Jinja makes them,
dot-stuffing in the mailer alone, and functions a reader can take in at once."""

from __future__ import annotations

import ast
import re
from collections import ChainMap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import markupsafe
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

import digest
from digest.mail.escape import ascii_html, escaped, html_in_ascii
from digest.mail.highlight import escape_html
from digest.mail.mailer import SmtpMailer, dot_stuffed
from digest.mail.templates import email_templates
from digest.settings import SmtpSettings
from tests.servers import free_port
from tests.test_render_message import message

PACKAGE = Path(digest.__file__).parent
# The modules issue 24 split render.py into, and the two whose long functions it cut.
MAIL_MODULES = ("escape", "message", "paper_cache", "papers", "render", "templates", "text_lines", "views")

feed_text = st.text(st.sampled_from("<>&\"' ab4é—🚀\n")) | st.text()


@settings(max_examples=300, deadline=None)
@given(text=feed_text)
def test_the_one_escape_is_markupsafes(text: str) -> None:
    """Every value from a feed goes through one escape, Jinja's own, as a plain ``str`` (a Markup
    would escape the ``<mark>`` joined to it); then in ASCII, the rest as character references."""
    assert type(escape_html(text)) is str and escape_html(text) == str(markupsafe.escape(text))
    assert escaped(text) == str(markupsafe.escape(text)).encode("ascii", "xmlcharrefreplace").decode("ascii")
    # The finalize hook leaves ASCII to autoescape, and writes the rest as escaped() does.
    assert ascii_html(text) == (text if text.isascii() else markupsafe.Markup(escaped(text)))


@given(text=feed_text)
def test_markup_goes_through_the_finalize_hook_unescaped(text: str) -> None:
    safe = markupsafe.Markup(f"<b>{escape_html(text)}</b>")
    assert str(ascii_html(safe)) == html_in_ascii(str(safe))


def private_imports(path: Path) -> list[str]:
    """Modules of other libraries that ``path`` imports by a private name (``pkg._inner``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found += [name for name in names if not name.startswith("digest") and "._" in name]
    return found


DOCUMENTED = {"os._exit"}  # underscored, but documented public API of the standard library


def private_uses(path: Path) -> list[str]:
    """Private names of other libraries that ``path`` reaches for: ``re2._Regexp``, an override or
    call of ``super()._get_socket``, ``getattr(x, "_regexp")``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    libraries = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not (getattr(node, "module", None) or "").startswith("digest")
        for alias in node.names
    }

    def private(name: str) -> bool:
        return name.startswith("_") and not name.endswith("__")

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            of_library = isinstance(owner, ast.Name) and owner.id in libraries
            of_base = isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"
            if (of_library or of_base) and ast.unparse(node) not in DOCUMENTED:
                found.append(f"{ast.unparse(node)}:{node.lineno}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            found.append(f"{ast.unparse(node)}:{node.lineno}")
    return found


def test_no_module_uses_a_private_api_of_another_library() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    found = {str(path.relative_to(PACKAGE)): private_imports(path) + private_uses(path) for path in paths}
    assert {name: uses for name, uses in found.items() if uses} == {}


def test_the_templates_keep_the_globals_jinja_gave_them() -> None:
    """No template's globals are swapped for a copy: each is Jinja's own view of its environment's."""
    templates = email_templates()
    every = [templates.html, templates.text] + [
        template for blocks in templates.blocks.values() for template in vars_of(blocks)
    ]
    for template in every:
        assert isinstance(template.globals, ChainMap) and template.globals.maps[-1] is template.environment.globals


def vars_of(blocks: object) -> list[object]:
    return [getattr(blocks, name) for name in ("papers", "text_papers", "text_paper")]


_DOTTY = st.lists(st.sampled_from([b".", b"..", b"\n", b"\r\n", b"\r", b" ", b"x", b"--"]), max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(raw=_DOTTY)
def test_dot_stuffing_is_rfc_5321s(raw: bytes) -> None:
    """Each line that starts with "." gets a second one (smtplib's pattern, RFC 5321 4.5.2), and a
    message with no such line is handed back as it is."""
    assert dot_stuffed(raw) == re.sub(rb"(?m)^\.", b"..", raw)
    if re.search(rb"(?m)^\.", raw) is None:
        assert dot_stuffed(raw) is raw


class _PipeliningRecorder:
    """A relay that offers PIPELINING and keeps each message as received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope.original_content or b"")
        return "250 OK"


@contextmanager
def pipelining_relay() -> Iterator[tuple[_PipeliningRecorder, int]]:
    handler, port = _PipeliningRecorder(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_a_pipelined_message_with_dot_lines_arrives_whole() -> None:
    plain = message()
    dotted = replace(plain, raw=plain.raw.replace(b"\r\n\r\n", b"\r\n\r\n.\r\n..two dots\r\n.one\r\n", 1))
    with pipelining_relay() as (relay, port):
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", from_address="papers@digest.example.org")
        with SmtpMailer(settings) as mailer:
            mailer.send(dotted)
            mailer.send(plain)
    assert [raw.rstrip(b"\r\n") for raw in relay.received] == [dotted.raw.rstrip(b"\r\n"), plain.raw.rstrip(b"\r\n")]


def long_functions(path: Path, limit: int = 50) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.end_lineno is not None and node.end_lineno - node.lineno >= limit
    ]


def test_no_function_of_the_split_modules_is_over_fifty_lines() -> None:
    too_long = {name: long_functions(PACKAGE / "mail" / f"{name}.py") for name in MAIL_MODULES}
    assert {name: found for name, found in too_long.items() if found} == {}
