"""Every error digest raises on purpose, in one tree, so callers can catch at the right depth.

DigestError                  base: the CLI turns it into a message and an exit status
├── SettingsError            a bad settings file or value (exit 2), names the key
├── RuleError                a rule that does not parse (exit 2), names rule and column
├── SubscriberError          a bad email address or subscriber record (exit 2)
├── StoreError               the store cannot be used
│   ├── StoreCorruptError    the store file does not parse or has the wrong shape; left untouched
│   └── StoreWriteError      a write failed (disk full, read-only): the cycle stops, nothing lost
├── DataDirError             the data directory cannot be used at all (exit 2)
├── CycleLockedError         another cycle holds the lock
├── SourceError              a source could not be fetched or parsed (cycle goes on)
└── DeliveryError            an email could not be handed over
    ├── TransientDeliveryError   retry later (4xx, dropped connection)
    └── PermanentDeliveryError   the server refused this recipient for good (5xx)
"""

from __future__ import annotations

import errno
import os


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


class StoreError(DigestError):
    exit_code = 1


class StoreCorruptError(StoreError):
    exit_code = 1


class StoreWriteError(StoreError):
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


class CycleLockedError(DigestError):
    exit_code = 1


class SourceError(DigestError):
    exit_code = 1


class DeliveryError(DigestError):
    """``server_wide`` marks a failure of the server or the connection (cannot connect, login refused)
    rather than of one address: after a few of those in a row the cycle stops trying the rest."""

    exit_code = 1

    def __init__(self, message: str, server_wide: bool = False) -> None:
        super().__init__(message)
        self.server_wide = server_wide


class TransientDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass
