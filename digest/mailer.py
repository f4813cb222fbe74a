"""Hand messages over: to an SMTP relay (one connection per cycle), or to ``.eml`` files in an outbox.

Both mailers are context managers with one ``send`` method; the pipeline does not know which it
has. A digest arrives as an :class:`OutgoingEmail` (bytes already built, handed over as they are);
the confirmation email as an :class:`EmailMessage`. SMTP replies are sorted into transient (retry
later) and permanent (give up on this address) errors, so one bad address never stops the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from digest.errors import PermanentDeliveryError, TransientDeliveryError
from digest.message import OutgoingEmail, needs_dot_stuffing
from digest.settings import SmtpSettings
from digest.storage import write_atomically

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

Sendable = EmailMessage | OutgoingEmail


def recipient(message: Sendable) -> str:
    if isinstance(message, OutgoingEmail):
        return message.to_address
    return str(message["To"].addresses[0].addr_spec)


class Mailer(Protocol):
    def __enter__(self) -> Mailer: ...

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def send(self, message: Sendable, while_waiting: Callable[[], None] | None = None) -> str:
        """Hand ``message`` over; return where it went. Raises a :class:`DeliveryError`.

        ``while_waiting``, if given, is called after the message's bytes are out and before the
        reply that accepts them: work the caller can do while a server reads the message (it may
        not be called at all, say when the server refused the recipient first). An error in it is
        logged, never taken for the delivery's.
        """
        ...


class OutboxMailer:
    """Writes each message to ``outbox/<time>-<recipient>-<hash>.eml`` atomically."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def __enter__(self) -> OutboxMailer:
        self.outbox.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, message: Sendable, while_waiting: Callable[[], None] | None = None) -> str:
        payload = message.as_bytes()
        name = re.sub(r"[^A-Za-z0-9@._-]", "_", recipient(message))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        digest = hashlib.sha256(payload).hexdigest()[:10]
        path = self.outbox / f"{stamp}-{name}-{digest}.eml"
        write_atomically(path, payload)
        _run_while_waiting(while_waiting)  # nothing to wait for here; the caller's work still gets done
        return str(path)


def _run_while_waiting(work: Callable[[], None] | None) -> None:
    """Run a caller's ``while_waiting`` work; an error in it is logged, and the delivery goes on:
    the message is on its way, and only its reply tells whether it was accepted."""
    if work is None:
        return
    try:
        work()
    except Exception:
        log.exception("work done while waiting for the SMTP server failed")


class SmtpConnection(smtplib.SMTP):
    """``DATA`` without smtplib's dot-stuffing pass when no line starts with a dot.

    smtplib runs a multi-line regular expression over every message to double leading dots:
    about 1 ms for a 100 KB digest, in the send loop, for nothing: a digest's lines are headers,
    base64 and MIME boundaries, none of which starts with a dot. One substring search decides;
    a message that does have such a line goes through smtplib's own ``data`` unchanged.

    Between sending the message and reading the reply that accepts it, ``while_waiting`` (set by
    :meth:`SmtpMailer.send` for one message) runs: the server takes milliseconds to read a digest,
    and the caller can use them.
    """

    while_waiting: Callable[[], None] | None = None
    # Whether the message being sent needs dot-stuffing, when its maker found out already (an
    # OutgoingEmail's dot_stuffing): None, and data searches the message itself.
    dot_stuffing: bool | None = None

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        stuffing = self.dot_stuffing if self.dot_stuffing is not None else needs_dot_stuffing(msg)
        if stuffing:
            return super().data(msg)
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        self.send(msg + (b".\r\n" if msg.endswith(b"\r\n") else b"\r\n.\r\n"))
        _run_while_waiting(self.while_waiting)
        code, reply = self.getreply()
        return code, reply


class SmtpSslConnection(SmtpConnection, smtplib.SMTP_SSL):
    """The same over implicit TLS."""


class SmtpMailer:
    """One SMTP connection for a whole cycle, reconnecting when the server drops it."""

    def __init__(self, settings: SmtpSettings) -> None:
        assert settings.host is not None
        self.settings = settings
        self._connection: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        host = s.host or "localhost"
        try:
            connection: smtplib.SMTP
            if s.security == "ssl":
                connection = SmtpSslConnection(
                    host, s.port, timeout=s.timeout_seconds, context=ssl.create_default_context()
                )
            else:
                connection = SmtpConnection(host, s.port, timeout=s.timeout_seconds)
                if s.security == "starttls":
                    connection.starttls(context=ssl.create_default_context())
            if s.username:
                connection.login(s.username, s.resolved_password() or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"SMTP login to {host}:{s.port} refused: {exc.smtp_code}", server_wide=True
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientDeliveryError(f"cannot connect to SMTP {host}:{s.port}: {exc}", server_wide=True) from exc
        return connection

    def send(self, message: Sendable, while_waiting: Callable[[], None] | None = None) -> str:
        if self._connection is None:
            self._connection = self._connect()
        connection = self._connection
        if isinstance(connection, SmtpConnection):
            connection.while_waiting = while_waiting  # run by its DATA, once the message is out
            connection.dot_stuffing = message.dot_stuffing if isinstance(message, OutgoingEmail) else None
        try:
            if isinstance(message, OutgoingEmail):
                options = ["SMTPUTF8"] if message.smtputf8 else []
                refused = connection.sendmail(
                    message.from_address, [message.to_address], message.raw, mail_options=options
                )
            else:
                refused = connection.send_message(message)
        except smtplib.SMTPNotSupportedError as exc:  # SMTPUTF8 for a non-ASCII address
            raise PermanentDeliveryError(f"SMTP server cannot take {recipient(message)}: {exc}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise _classified(code, text, message) from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code in (421,):
                self._drop()
            raise _classified(exc.smtp_code, exc.smtp_error, message) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TransientDeliveryError(f"SMTP connection lost: {exc}") from exc
        except smtplib.SMTPException as exc:
            self._drop()
            raise TransientDeliveryError(f"SMTP error: {exc}") from exc
        finally:
            if isinstance(connection, SmtpConnection):
                connection.while_waiting, connection.dot_stuffing = None, None
        if refused:
            code, text = next(iter(refused.values()))
            raise _classified(code, text, message)
        return f"smtp://{self.settings.host}:{self.settings.port}"

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def _classified(code: int, text: bytes | str, message: Sendable) -> Exception:
    reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    detail = f"SMTP {code} for {recipient(message)}: {reason}"
    if 500 <= code < 600:
        return PermanentDeliveryError(detail)
    return TransientDeliveryError(detail)


def make_mailer(smtp: SmtpSettings, outbox: Path) -> Mailer:
    return SmtpMailer(smtp) if smtp.host else OutboxMailer(outbox)
