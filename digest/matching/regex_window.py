"""How wide a regular expression's window is: what makes RE2 leave its fast engine.

RE2 runs a pattern as a DFA built while it reads, within a memory budget. A character class
followed by a span of classes, as in ``/[aeiou].{12}zq/``, makes a DFA whose states must remember
which of the last dozen characters could have started a match: thousands of states over real
abstracts, past the budget, and RE2 falls back to a engine a hundred times slower (0.3 s to
several seconds over 2,000 papers; ``bench/rules.md``). Program size does not predict it, so a
rule is refused by this count instead: the number of characters that classes (``.``, ``[...]``,
``\\w``, alternations) must cover, in a row or repeated by ``{n,m}``. ``.*`` and ``.+`` count once:
an unbounded gap is a single DFA state. Literal characters count nothing.

The scanner reads RE2's syntax only as far as this count needs; RE2 itself has already accepted
the pattern when it runs, so it never has to report errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REGEX_WINDOW = 8  # the costliest shapes measured at 8 take ~12 ms over 2,000 papers, 3 of them ~35

_COUNTED = re.compile(r"\{(\d+)(,(\d*))?\}")
_WIDE_ESCAPES = frozenset("dDwWsSpPC")
_ZERO_WIDTH_ESCAPES = frozenset("bBAz")


@dataclass(slots=True)
class _Scanner:
    pattern: str
    at: int = 0

    def sequence(self) -> int:
        """The width of alternatives up to ``)`` or the end: the widest branch's."""
        widest = branch = 0
        alternatives = 1
        while self.at < len(self.pattern) and self.pattern[self.at] != ")":
            if self.pattern[self.at] == "|":
                widest, branch = max(widest, branch), 0
                alternatives += 1
                self.at += 1
                continue
            atom = self.atom()
            branch += self.repeated(atom)
        widest = max(widest, branch)
        return max(widest, 1) if alternatives > 1 else widest

    def atom(self) -> int:
        char = self.pattern[self.at]
        self.at += 1
        if char == "\\":
            return self.escape()
        if char == "[":
            self.skip_class()
            return 1
        if char == "(":
            return self.group()
        if char == ".":
            return 1
        return 0  # a literal character, ^ or $

    def escape(self) -> int:
        if self.at >= len(self.pattern):
            return 0
        char = self.pattern[self.at]
        self.at += 1
        if char == "Q":  # \Q...\E: literal text
            end = self.pattern.find("\\E", self.at)
            self.at = len(self.pattern) if end < 0 else end + 2
            return 0
        if char in "pP" and self.pattern.startswith("{", self.at):  # \p{Greek}
            self.at = self.pattern.find("}", self.at) + 1 or len(self.pattern)
        elif char in "pP":  # \pL: a one-letter class name
            self.at += 1
        if char in _ZERO_WIDTH_ESCAPES:
            return 0
        return 1 if char in _WIDE_ESCAPES else 0

    def skip_class(self) -> None:
        """Past the ``]`` that closes a class (a ``]`` first in it, or escaped, is a member)."""
        if self.pattern.startswith("^", self.at):
            self.at += 1
        if self.pattern.startswith("]", self.at):
            self.at += 1
        while self.at < len(self.pattern) and self.pattern[self.at] != "]":
            if self.pattern.startswith("[:", self.at):
                end = self.pattern.find(":]", self.at + 2)
                self.at = self.at + 1 if end < 0 else end + 2
                continue
            self.at += 2 if self.pattern[self.at] == "\\" else 1
        self.at += 1

    def group(self) -> int:
        if self.pattern.startswith("?", self.at):
            close = self.pattern.find(")", self.at)
            colon = self.pattern.find(":", self.at)
            named = self.pattern.startswith(("?P<", "?<"), self.at)
            if named:
                self.at = self.pattern.find(">", self.at) + 1
            elif 0 <= colon < close or close < 0:
                self.at = colon + 1  # (?:...) or (?i:...)
            else:
                self.at = close + 1  # (?i): flags only, no width
                return 0
        width = self.sequence()
        self.at += 1  # the ')'
        return width

    def repeated(self, width: int) -> int:
        """``width`` times what follows it: ``{n,m}`` multiplies, ``*``, ``+`` and ``?`` do not."""
        counted = _COUNTED.match(self.pattern, self.at)
        if counted is not None:
            self.at = counted.end()
            low = int(counted.group(1))
            high = counted.group(3)
            times = low + 1 if counted.group(2) and not high else int(high or low)
            width *= times
        elif self.pattern.startswith(("*", "+", "?"), self.at):
            self.at += 1
        else:
            return width
        if self.pattern.startswith("?", self.at):  # lazy: same width
            self.at += 1
        return width


def window_width(pattern: str) -> int:
    """The characters classes must cover in a row in ``pattern`` (see the module's docstring):
    ``/e.{30}zq/`` is 30, ``/RTX\\s?40[89]0/`` 2, ``/\\d{4}-\\d{2}/`` 6, ``/a.*b/`` 1."""
    scanner = _Scanner(pattern)
    total = 0
    while scanner.at < len(pattern):
        total += scanner.sequence()
        scanner.at += 1  # an unbalanced ')' (RE2 refuses those before this runs)
    return total
