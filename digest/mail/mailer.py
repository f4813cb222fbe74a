"""Hand messages over: to an SMTP relay (one connection per cycle), or to ``.eml`` files in an outbox.

Both mailers are context managers with one ``send`` method; the pipeline does not know which it
has. A digest arrives as an :class:`OutgoingEmail` (bytes already built, handed over as they are);
the confirmation email as an :class:`EmailMessage`. SMTP replies are sorted into transient (retry
later) and permanent (give up on this address) errors, so one bad address never stops the others.

A server that does not answer within ``smtp.timeout_seconds`` (no greeting, no reply) raises
:class:`UnresponsiveServerError`: it is the server's state, not one address's, so the cycle does not
try it again. A stop request must not wait for such a server either: :func:`hung_up_on_stop` gives
the email being handed over a few seconds to be answered, then shuts the socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from digest.errors import PermanentDeliveryError, ThrottledError, TransientDeliveryError, UnresponsiveServerError
from digest.mail.message import OutgoingEmail
from digest.mail.quota import is_throttling
from digest.settings import SmtpSettings
from digest.state.files import write_atomically

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

Sendable = EmailMessage | OutgoingEmail

# How long a stop request lets the email being handed over wait for the server's answer before
# hanging up: a working server answers in milliseconds, a hung one would hold SIGTERM for
# smtp.timeout_seconds (or, trickling, forever).
STOP_GRACE_SECONDS = 5.0

# A line of a message that starts with "." (RFC 5321 4.5.2): found by one scan for a literal, where
# smtplib's own pattern (a multi-line "^") is tried at every byte of the message.
_DOT_LINE = re.compile(rb"\n\.")


def dot_stuffed(msg: bytes) -> bytes:
    """``msg`` as DATA sends it, each line that starts with "." given a second one; ``msg`` itself
    (no copy) when no line does, as in a digest: headers, base64, boundaries and the 7-bit HTML."""
    return _DOT_LINE.sub(b"\n..", b"." + msg if msg.startswith(b".") else msg)


def _timed_out(exc: BaseException) -> bool:
    """Whether a socket timeout is behind ``exc``: smtplib turns one into ``SMTPServerDisconnected``."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
    """smtplib's client, the message of ``DATA`` sent by :meth:`_message` whether pipelined or not.

    Why its own ``data``: between sending the message and reading the reply that accepts it,
    ``while_waiting`` (set by :meth:`SmtpMailer.send` for one message) runs, as the server takes
    milliseconds to read a digest and the caller can use them; and :func:`dot_stuffed` is a
    fraction of smtplib's pass.
    """

    while_waiting: Callable[[], None] | None = None
    # Told of the socket as soon as it is connected (before the greeting is read), so that
    # SmtpMailer.hang_up can shut it from another thread.
    on_socket: Callable[[socket.socket], None] | None = None

    def __init__(self, *args: Any, on_socket: Callable[[socket.socket], None] | None = None, **kwargs: Any) -> None:
        self.on_socket = on_socket
        self._announced: socket.socket | None = None
        super().__init__(*args, **kwargs)

    def getreply(self) -> tuple[int, bytes]:
        # The first reply read on a socket (the greeting, or the first after STARTTLS) announces it:
        # SmtpMailer.hang_up can then shut it from another thread while the server keeps silent.
        if self.sock is not None and self.sock is not self._announced:
            self._announced = self.sock
            # Every command and message goes in one send: Nagle's wait for an ACK (held back by
            # the other side's delayed ACK) would only add idling to every email.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.on_socket is not None:
                self.on_socket(self.sock)
        return super().getreply()

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        return self._message(msg)

    def _message(self, msg: bytes) -> tuple[int, bytes]:
        """Send the message after a 354 and its end, run ``while_waiting``, and read the reply."""
        msg = dot_stuffed(msg)
        self.send(msg + (b".\r\n" if msg.endswith(b"\r\n") else b"\r\n.\r\n"))
        _run_while_waiting(self.while_waiting)
        return self.getreply()

    def pipelined_sendmail(self, from_address: str, to_address: str, msg: bytes, options: list[str]) -> None:
        """One email in two round trips (RFC 2920): MAIL, RCPT and DATA in one flight, then the message.

        Only for a server that offers PIPELINING. Every reply of the flight is read before acting
        on any, so the conversation stays in step; the failures raise what smtplib's ``sendmail``
        raises for them, so :meth:`SmtpMailer.send` sorts them the same way. A server that says 354
        although MAIL or RCPT failed gets hung up on: ending its DATA would hand it a message."""
        self.ehlo_or_helo_if_needed()
        smtputf8 = any(option.upper() == "SMTPUTF8" for option in options)
        if smtputf8 and not self.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
        options = [*options, f"SIZE={len(msg)}"] if self.has_extn("size") else list(options)
        extra = "".join(f" {option}" for option in options)
        flight = (
            f"MAIL FROM:{smtplib.quoteaddr(from_address)}{extra}\r\nRCPT TO:{smtplib.quoteaddr(to_address)}\r\nDATA\r\n"
        )
        self.send(flight.encode("utf-8" if smtputf8 else "ascii"))
        mail, rcpt, data = self.getreply(), self.getreply(), self.getreply()
        failed: smtplib.SMTPException | None = None
        if mail[0] != 250:
            failed = smtplib.SMTPSenderRefused(mail[0], mail[1], from_address)
        elif rcpt[0] not in (250, 251):
            failed = smtplib.SMTPRecipientsRefused({to_address: rcpt})
        elif data[0] != 354:
            failed = smtplib.SMTPDataError(data[0], data[1])
        if failed is not None:
            if data[0] == 354 or 421 in (mail[0], rcpt[0], data[0]):
                self.close()
            else:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self.rset()
            raise failed
        code, reply = self._message(msg)
        if code != 250:
            if code == 421:
                self.close()
            else:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self.rset()
            raise smtplib.SMTPDataError(code, reply)


class SmtpSslConnection(SmtpConnection, smtplib.SMTP_SSL):
    """The same over implicit TLS."""


class SmtpMailer:
    """One SMTP connection for a whole cycle, reconnecting when the server drops it.

    :meth:`hang_up` (from another thread: :func:`hung_up_on_stop`) shuts the connection's socket,
    so a read or write blocked on a server that does not answer returns at once; after it, nothing
    more is sent.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        assert settings.host is not None
        self.settings = settings
        self._connection: smtplib.SMTP | None = None
        self._socket: socket.socket | None = None  # the current connection's, for hang_up
        self.hung_up = False

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _watch(self, sock: socket.socket) -> None:
        """A new connection's socket: kept for :meth:`hang_up`, and shut at once if it came too late."""
        self._socket = sock
        if self.hung_up:
            _shut(sock)

    def hang_up(self) -> None:
        """Shut the socket now, whatever the sending thread is blocked on: it gets an error at once
        instead of waiting ``smtp.timeout_seconds``. The email in flight is then not taken as sent."""
        self.hung_up = True
        sock = self._socket
        if sock is not None:
            _shut(sock)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        host = s.host or "localhost"
        connection: smtplib.SMTP | None = None
        try:
            if s.security == "ssl":
                connection = SmtpSslConnection(
                    host,
                    s.port,
                    timeout=s.timeout_seconds,
                    context=ssl.create_default_context(),
                    on_socket=self._watch,
                )
            else:
                connection = SmtpConnection(host, s.port, timeout=s.timeout_seconds, on_socket=self._watch)
                if s.security == "starttls":
                    connection.starttls(context=ssl.create_default_context())
                    self._socket = connection.sock  # the TLS one; shutting it shuts the same descriptor
            if s.username:
                connection.login(s.username, s.resolved_password() or "")
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(connection)
            raise PermanentDeliveryError(
                f"SMTP login to {host}:{s.port} refused: {exc.smtp_code}", server_wide=True
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _close_quietly(connection)
            self._socket = None
            if _timed_out(exc):
                raise self._unresponsive("while connecting") from exc
            raise TransientDeliveryError(f"cannot connect to SMTP {host}:{s.port}: {exc}", server_wide=True) from exc
        return connection

    def _unresponsive(self, when: str) -> UnresponsiveServerError:
        return UnresponsiveServerError(
            f"SMTP server {self.server} did not answer within {self.settings.timeout_seconds:g} s ({when}); "
            "the digests not handed over wait for the next cycle: check that the server is up, "
            "or raise smtp.timeout_seconds"
        )

    def send(self, message: Sendable, while_waiting: Callable[[], None] | None = None) -> str:
        if self.hung_up:
            raise TransientDeliveryError(f"not handed over to {self.server}: a stop was requested")
        if self._connection is None:
            self._connection = self._connect()
        connection = self._connection
        if isinstance(connection, SmtpConnection):
            connection.while_waiting = while_waiting  # run by its DATA, once the message is out
        try:
            if isinstance(message, OutgoingEmail) and self._pipelining(connection):
                assert isinstance(connection, SmtpConnection)
                options = ["SMTPUTF8"] if message.smtputf8 else []
                connection.pipelined_sendmail(message.from_address, message.to_address, message.raw, options)
                refused = {}
            elif isinstance(message, OutgoingEmail):
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
            if code == 421:  # the server closes the connection: the next email needs a new one
                self._drop()
            raise _classified(code, text, message) from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code in (421,):
                self._drop()
            raise _classified(exc.smtp_code, exc.smtp_error, message) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            if _timed_out(exc):
                raise self._unresponsive(f"sending the digest for {recipient(message)}") from exc
            if self.hung_up:
                raise TransientDeliveryError(f"hung up on {self.server} (a stop was requested): {exc}") from exc
            raise TransientDeliveryError(f"SMTP connection lost: {exc}") from exc
        except smtplib.SMTPException as exc:
            self._drop()
            raise TransientDeliveryError(f"SMTP error: {exc}") from exc
        finally:
            if isinstance(connection, SmtpConnection):
                connection.while_waiting = None
        if refused:
            code, text = next(iter(refused.values()))
            raise _classified(code, text, message)
        return f"smtp://{self.server}"

    def _pipelining(self, connection: smtplib.SMTP) -> bool:
        """Whether to send MAIL, RCPT and DATA in one flight: asked for, and offered by the server."""
        if not self.settings.pipelining or not isinstance(connection, SmtpConnection):
            return False
        connection.ehlo_or_helo_if_needed()
        return connection.has_extn("pipelining")

    def _drop(self) -> None:
        connection, self._connection, self._socket = self._connection, None, None
        _close_quietly(connection)

    def close(self) -> None:
        connection, self._connection, self._socket = self._connection, None, None
        if connection is None:
            return
        if self.hung_up:  # no QUIT: the server did not answer, or we were told to stop waiting for it
            _close_quietly(connection)
            return
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def _shut(sock: socket.socket) -> None:
    """Shut both directions of the descriptor (the plain socket's call, also under TLS): a thread
    blocked reading or writing it gets end-of-file or an error at once."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _close_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()


@contextmanager
def hung_up_on_stop(mailer: Mailer, stop: threading.Event, grace: float = STOP_GRACE_SECONDS) -> Iterator[None]:
    """While the block runs, a stop request gives the email being handed over ``grace`` seconds to be
    answered, then hangs up on the SMTP server.

    Why: the send loop checks the stop between emails, but a server that stopped answering holds
    it in a socket read for ``smtp.timeout_seconds``. A watcher thread is the simplest way to end
    that read from outside. An email hung up on was not answered, so it is not recorded: it stays
    pending (the server may still have taken it: the usual SMTP window for a duplicate).
    """
    if not isinstance(mailer, SmtpMailer):
        yield
        return
    smtp_mailer = mailer
    done = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            if done.is_set():
                return
        if not done.wait(grace):
            log.warning("stop requested: %s has not answered for %gs; hanging up", smtp_mailer.server, grace)
            smtp_mailer.hang_up()

    threading.Thread(target=watch, name="smtp-hang-up", daemon=True).start()
    try:
        yield
    finally:
        done.set()  # the watcher ends within 0.2 s; nothing waits for it


def _classified(code: int, text: bytes | str, message: Sendable) -> Exception:
    reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    detail = f"SMTP {code} for {recipient(message)}: {reason}"
    if 500 <= code < 600:
        return PermanentDeliveryError(detail)
    if is_throttling(code, reason):
        return ThrottledError(detail)
    return TransientDeliveryError(detail)


def make_mailer(smtp: SmtpSettings, outbox: Path) -> Mailer:
    return SmtpMailer(smtp) if smtp.host else OutboxMailer(outbox)
