"""Every error digest raises on purpose, in one tree, so callers can catch at the right depth.

DigestError                    base: the CLI turns it into a message and an exit status
├── SettingsError              a bad settings file or value (exit 2), names the key
├── RuleError                  a rule that does not parse (exit 2), names rule and column
├── SubscriberError            a bad email address or subscriber record (exit 2)
│   └── ImportRefused          an import file with bad lines (exit 2): nothing of it is imported
├── DataDirError               the data directory cannot be used at all (exit 2)
├── TokenError                 a link token tampered with, expired, or made for another purpose
├── FeedFormatError            a payload that is not a feed (also a ValueError); its day is retried
├── HeaderValueError           a value that cannot go into a mail header (also a ValueError)
├── BackupError                a backup or restore that cannot be done as asked (exit 2)
├── BounceMailboxError         the bounce mailbox cannot be read (connection, login, folder)
├── StoreError                 the store cannot be used
│   ├── StoreCorruptError      the store file does not parse or has the wrong shape; left untouched
│   ├── StoreWriteError        a write failed (disk full, read-only): the cycle stops, nothing lost
│   └── StoreUnavailableError  PostgreSQL unreachable or no answer within the web's bound: try again
├── BusyError                  someone else has what was asked for: nothing was done, try again shortly
│   ├── CycleLockedError       another process (a cycle, a CLI command) holds the store lock
│   └── PreviewBusy            more previews are waiting than the preview worker queues
└── DeliveryError              an email could not be handed over
    ├── TransientDeliveryError     retry later (4xx, dropped connection)
    │   ├── UnresponsiveServerError    no answer within smtp.timeout_seconds: server-wide
    │   └── ThrottledError             "421/450 too many": slow down, on its own budget
    └── PermanentDeliveryError     the server refused this recipient for good (5xx)

Every subclass of DigestError is defined here (tests/test_error_tree.py). Exceptions that only
steer control flow inside one module (a budget overrun, a stop request, an incomplete day) are not
errors and are not in the tree.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass


class DigestError(Exception):
    """Base of every deliberate digest error; its message is meant for the user."""

    exit_code = 1


class SettingsError(DigestError):
    exit_code = 2


class RuleError(DigestError):
    """A rule that does not parse.

    ``column`` is 1-based into the rule text; ``rule_number`` (1-based) is set by callers that
    hold a list of rules, so the message can say "rule 2, column 7: missing ')'".
    """

    exit_code = 2

    def __init__(self, message: str, rule: str, column: int, rule_number: int | None = None) -> None:
        self.reason = message
        self.rule = rule
        self.column = column
        self.rule_number = rule_number
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"column {self.column}"
        if self.rule_number is not None:
            where = f"rule {self.rule_number}, {where}"
        return f"{where}: {self.reason} (in {self.rule!r})"

    def numbered(self, rule_number: int) -> RuleError:
        """The same error, told as part of a list of rules."""
        return RuleError(self.reason, self.rule, self.column, rule_number)


class SubscriberError(DigestError):
    exit_code = 2


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A bad line of an import file, as ``FILE:LINE: what is wrong``."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


class ImportRefused(SubscriberError):
    """An import file with bad lines: nothing of it is imported."""

    def __init__(self, problems: Sequence[LineProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"import refused: {len(self.problems)} bad line(s); nothing was imported")


class StoreError(DigestError):
    exit_code = 1


class StoreCorruptError(StoreError):
    exit_code = 1


class StoreWriteError(StoreError):
    exit_code = 1


class StoreUnavailableError(StoreError):
    """The store could not be reached, or did not answer in time: worth trying again shortly."""

    exit_code = 1


class DataDirError(DigestError):
    exit_code = 2


def describe_os_error(exc: OSError, doing: str, path: object = None) -> str:
    """One line for a failed file operation: what, where, why, and what to do for the usual causes.

    ``path`` names the file when the error does not (a ``write(2)`` that found the disk full)."""
    named = exc.filename or path
    where = f" {named}" if named else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hints = {
        errno.ENOSPC: "the disk is full: free some space",
        errno.EDQUOT: "the disk quota is used up: free some space",
        errno.EROFS: "the file system is read-only: mount the data directory read-write",
        errno.EACCES: f"digest runs as uid {os.getuid()} and may not write there: fix the owner or permissions",
        errno.EPERM: f"digest runs as uid {os.getuid()} and may not write there: fix the owner or permissions",
    }
    hint = hints.get(exc.errno or 0)
    return f"cannot {doing}{where}: {reason}" + (f"; {hint}" if hint else "")


class TokenError(DigestError):
    """A token that is tampered with, expired, or made for another purpose."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class FeedFormatError(DigestError, ValueError):
    """The payload is not an RSS, Atom or JSON feed."""


class HeaderValueError(DigestError, ValueError):
    """A value that cannot go into a header as it is (a line break, or longer than a line may be)."""


class BackupError(DigestError):
    """A backup or restore that cannot be done as asked (the file, the directory): exit 2."""

    exit_code = 2


class BounceMailboxError(DigestError):
    """The bounce mailbox cannot be read (connection, login, folder): one line, exit 1."""


class BusyError(DigestError):
    """Someone else has what was asked for; nothing was done, and asking again shortly may work."""

    exit_code = 1


class CycleLockedError(BusyError):
    pass


class PreviewBusy(BusyError):
    """More previews are waiting than the worker queues: the person is asked to wait a moment."""


class DeliveryError(DigestError):
    """``server_wide`` marks a failure of the server or the connection (cannot connect, login refused)
    rather than of one address: after a few of those in a row the cycle stops trying the rest."""

    exit_code = 1

    def __init__(self, message: str, server_wide: bool = False) -> None:
        super().__init__(message)
        self.server_wide = server_wide


class TransientDeliveryError(DeliveryError):
    pass


class UnresponsiveServerError(TransientDeliveryError):
    """The SMTP server did not answer within ``smtp.timeout_seconds`` (no greeting, no reply).

    Always server-wide and not retried in this cycle: a server that accepts connections but never
    speaks would otherwise cost a timeout per attempt per digest.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, server_wide=True)


class ThrottledError(TransientDeliveryError):
    """The server asks to slow down ("421 4.7.0 too many messages", "450 rate limited"): not this
    address's problem and not a failure, so it is waited out on its own budget (digest.mail.quota.Throttle)."""


class PermanentDeliveryError(DeliveryError):
    pass
