"""The keyword rule language: a lexer, a parser and the syntax tree, with its canonical form.

Pure: text in, a tree or a :class:`RuleError` with a 1-based column out. Grammar, lowest
precedence first (README "Keyword rules" shows it by example)::

    rule    := or
    or      := and ("OR" and)*
    and     := unary (["AND"] unary)*            juxtaposition means AND
    unary   := "NOT" unary | "-" single | primary
    single  := "-" single | "(" or ")" | FIELD ":" scoped | GATE | "has:code" | WORD | QUOTED | /regex/
    primary := "(" or ")" | FIELD ":" scoped | GATE | "has:code" | near | /regex/flags
    scoped  := "(" or ")" | near | /regex/flags
    near    := phrase ["NEAR/n" phrase]
    phrase  := WORD+ | '"' words '"'             consecutive bare words are one phrase
    WORD    := ["="] letters-and-digits ["*"]    "=SAM": exact (case, no plural forms)

A run of bare words is one phrase, so the base form of SPEC.md (``video diffusion``: consecutive
tokens) means what it always meant; quoting is only needed to put two phrases side by side.
Operators are upper case (``AND``), so ``rock and roll`` stays a phrase (with a warning: people
who type ``video or audio`` usually mean OR). As in search boxes people know, ``-`` negates the one
word, quoted phrase, field or group right after it: ``-survey 4090`` is ``NOT survey AND 4090``
(``NOT`` still takes the whole phrase after it). A parse collects :attr:`Parser.warnings`: things
it read literally that are often meant otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Protocol

import re2

from digest.errors import RuleError
from digest.matching.regex_window import MAX_REGEX_WINDOW, window_width
from digest.text import fold, forms, normal, tokenize

MAX_RULE_LENGTH = 500
MAX_REGEX_LENGTH = 200
MAX_DEPTH = 24
MIN_PREFIX = 2  # letters or digits before "*", unless a word of the phrase comes first: "3D*", "RTX4*"
# What one rule may hold, so that no rule within the limits costs more than bench/rules.md says.
MAX_REGEXES = 3
MAX_PREFIXES = 20
MAX_NEAR = 50  # words apart, at most
REGEX_MAX_MEM = 1 << 20  # bytes RE2 may use for one compiled regex: bounds its compile time (~8 ms) too

TEXT_FIELDS: tuple[str, ...] = ("title", "abstract")
FIELDS: tuple[str, ...] = ("title", "abstract", "author", "org", "keyword", "source", "category")
GATES = ("upvotes", "comments")
OPERATORS = ("AND", "OR", "NOT")
_NEAR = re.compile(r"NEAR/(\d{1,3})")
_SPACED_GATE = re.compile(r"(upvotes|comments)\s*(>=|<=|>|<|=)\s*([^\s()\"]*)", re.IGNORECASE)

_SCOPE = re.compile(r"([A-Za-z]+):")


# -- the tree ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    """One word of a phrase as written (letters only or digits only); ``prefix`` for ``diffus*``,
    ``exact`` for ``=SAM`` (that spelling and case only, no plural forms)."""

    surface: str
    prefix: bool = False
    exact: bool = False

    @cached_property
    def term(self) -> str:
        """The normalised word (NFKC, case-folded): what the index is looked up by."""
        return normal(self.surface)

    @cached_property
    def forms(self) -> frozenset[str]:
        """The normalised words it stands for: a plain word's plural and singular forms."""
        return frozenset((self.term,)) if self.prefix or self.exact else forms(self.surface)

    def show(self, folded: bool) -> str:
        if self.exact:
            return "=" + self.surface
        if self.prefix:
            return (self.term if folded else self.surface) + "*"
        return fold(self.surface) if folded else self.surface


@dataclass(frozen=True)
class Phrase:
    words: tuple[Word, ...]
    # One bare word that is several (cs.CV, real-time) as written, so it prints back the same way;
    # not compared: it means what its words mean.
    written: str = field(default="", compare=False)


@dataclass(frozen=True)
class Near:
    """``video NEAR/5 diffusion``: both phrases in one value of a field, in either order, with at
    most ``distance`` words between them."""

    left: Phrase
    right: Phrase
    distance: int


@dataclass(frozen=True)
class Regex:
    pattern: str
    ignore_case: bool = False


@dataclass(frozen=True)
class Gate:
    """``upvotes>=20``: a number an item has, compared with a constant."""

    name: str
    op: str
    value: int

    def admits(self, number: int) -> bool:
        return {
            ">=": number >= self.value,
            "<=": number <= self.value,
            ">": number > self.value,
            "<": number < self.value,
            "=": number == self.value,
        }[self.op]


@dataclass(frozen=True)
class HasCode:
    pass


@dataclass(frozen=True)
class Scope:
    field: str
    child: Node


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Phrase | Near | Regex | Gate | HasCode | Scope | Not | And | Or


def leaves(node: Node) -> Iterator[Node]:
    """The words, phrases, proximities, regular expressions and gates of a rule, in order."""
    match node:
        case Scope(_, child) | Not(child):
            yield from leaves(child)
        case And(children) | Or(children):
            for child in children:
                yield from leaves(child)
        case _:
            yield node


def show(node: Node, folded: bool = False) -> str:
    """The canonical text of ``node``; ``folded`` prints words as they are compared (a cache key).

    Explicit ``AND``, parentheses only where precedence needs them, fields and operators in one
    spelling; parsing it gives back the same tree, and so the same text.
    """
    match node:
        case Phrase(words, written):
            if written and not folded:
                return written
            # A word spelled like an operator ("AND" in quotes) prints in lower case: same term.
            text = " ".join(
                w.show(folded).casefold() if w.surface in OPERATORS and not w.exact else w.show(folded) for w in words
            )
            return f'"{text}"' if len(words) > 1 else text
        case Near(left, right, distance):
            return f"{show(left, folded)} NEAR/{distance} {show(right, folded)}"
        case Regex(pattern, ignore_case):
            return f"/{pattern}/" + ("i" if ignore_case else "")
        case Gate(name, op, value):
            return f"{name}{op}{value}"
        case HasCode():
            return "has:code"
        case Scope(field, child):
            return f"{field}:{_grouped(child, folded, (And, Or, Not, Near))}"
        case Not(child):
            return f"NOT {_grouped(child, folded, (And, Or))}"
        case And(children):
            return " AND ".join(_grouped(c, folded, (Or,)) for c in children)
        case Or(children):
            return " OR ".join(show(c, folded) for c in children)
    raise AssertionError(f"unknown node {node!r}")


def _grouped(node: Node, folded: bool, needs_parens: tuple[type, ...]) -> str:
    text = show(node, folded)
    return f"({text})" if isinstance(node, needs_parens) else text


# -- regular expressions ---------------------------------------------------------------------
class CompiledRegex(Protocol):
    """The part of a compiled google-re2 pattern this module uses (its class is private)."""

    def search(self, text: str | bytes) -> Any: ...

    def finditer(self, text: str | bytes) -> Iterator[Any]: ...


@lru_cache(maxsize=4096)
def compile_regex(pattern: str | bytes, ignore_case: bool) -> CompiledRegex:
    """Compile with RE2 (linear time in the text, bounded memory); raises ``re2.error``. A
    ``bytes`` pattern (UTF-8) searches UTF-8 text: the same matches, at byte offsets."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    options.case_sensitive = not ignore_case
    compiled: CompiledRegex = re2.compile(pattern, options)
    return compiled


_EMPTY_PROBES = ("", "a", " ", "a b", "0", "a\nb")


def matches_empty_text(compiled: CompiledRegex) -> bool:
    """Whether the pattern finds an empty match in a few short texts (``/x*/``, ``/(ab)?/``, ``/\\b/``).

    Such a pattern finds an empty match at nearly every place of a paper, and a search for its
    longer matches would step through them one by one; it is refused instead.
    """
    return any(found.end() == found.start() for probe in _EMPTY_PROBES for found in compiled.finditer(probe))


# -- lexer -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Lexeme:
    """A token of the rule text. ``kind``: ( ) AND OR NOT - SCOPE GATE HAS WORD QUOTED REGEX END."""

    kind: str
    column: int  # 0-based offset into the rule text
    text: str = ""
    node: Node | None = None


def lex(rule: str) -> list[Lexeme]:
    out: list[Lexeme] = []
    i, n = 0, len(rule)
    while i < n:
        char = rule[i]
        if char.isspace():
            i += 1
        elif char in "()":
            out.append(Lexeme(char, i))
            i += 1
        elif char == '"':
            close = rule.find('"', i + 1)
            if close < 0:
                raise RuleError("missing closing '\"'", rule, i + 1)
            out.append(Lexeme("QUOTED", i, rule[i + 1 : close]))
            i = close + 1
        elif char == "/":
            lexeme, i = _lex_regex(rule, i)
            out.append(lexeme)
        elif char == "-" and i + 1 < n and _starts_term(rule[i + 1]):
            out.append(Lexeme("-", i))
            i += 1
        elif gate := _SPACED_GATE.match(rule, i):
            out.append(_lex_gate(rule, i, gate))
            i = gate.end()
        else:
            end = i
            while end < n and not _breaks(rule[end]):
                end += 1
            lexemes, i = _lex_word(rule, i, end)
            out.extend(lexemes)
    out.append(Lexeme("END", n))
    return out


def _breaks(char: str) -> bool:
    """Where a bare word (or a regex's flags) ends."""
    return char.isspace() or char in '()"'


def _starts_term(char: str) -> bool:
    return char.isalnum() or char in '"(/='


def _lex_gate(rule: str, start: int, gate: re.Match[str]) -> Lexeme:
    """``upvotes>=20``, also spaced as people type it: ``upvotes >= 20``."""
    name, op, number = gate.group(1).lower(), gate.group(2), gate.group(3)
    if not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise RuleError(f"expected a whole number after '{name}{op}'", rule, gate.start(3) + 1)
    return Lexeme("GATE", start, f"{name}{op}{number}", Gate(name, op, int(number)))


def _lex_regex(rule: str, start: int) -> tuple[Lexeme, int]:
    i = start + 1
    while i < len(rule) and rule[i] != "/":
        i += 2 if rule[i] == "\\" else 1
    if i >= len(rule):
        raise RuleError("missing closing '/' of the regular expression", rule, start + 1)
    pattern = rule[start + 1 : i]
    i += 1
    flags_start = i
    while i < len(rule) and not _breaks(rule[i]):
        i += 1
    flags = rule[flags_start:i]
    if flags not in ("", "i"):
        raise RuleError(f"unknown regular expression flag {flags!r}: expected 'i' or nothing", rule, flags_start + 1)
    if not pattern:
        raise RuleError("empty regular expression", rule, start + 1)
    if len(pattern) > MAX_REGEX_LENGTH:
        raise RuleError(f"regular expression longer than {MAX_REGEX_LENGTH} characters", rule, start + 1)
    try:
        compiled = compile_regex(pattern, bool(flags))
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RuleError(f"bad regular expression: {reason}", rule, start + 1) from None
    width = window_width(pattern)
    if width > MAX_REGEX_WINDOW:
        raise RuleError(
            f"the regular expression /{pattern}/ needs {width} characters matched by classes "
            f"(. [a-z] \\w ...): at most {MAX_REGEX_WINDOW}, or RE2 slows down a hundredfold; "
            "write .* for a gap, or NEAR/5 for words near each other",
            rule,
            start + 1,
        )
    if matches_empty_text(compiled):
        raise RuleError(
            f"the regular expression /{pattern}/ matches empty text: make it match at least one character "
            "(/x+/, not /x*/)",
            rule,
            start + 1,
        )
    return Lexeme("REGEX", start, pattern, Regex(pattern, bool(flags))), i


def _lex_word(rule: str, start: int, end: int) -> tuple[list[Lexeme], int]:
    """A bare word: an operator, a field prefix, a gate, ``has:code`` or words of a phrase."""
    word = rule[start:end]
    if word in OPERATORS:
        return [Lexeme(word, start)], end
    scope = _SCOPE.match(word)
    if scope:
        name = scope.group(1).lower()
        after = start + scope.end()
        if name == "has":
            if word[scope.end() :].lower() != "code":
                raise RuleError("expected 'has:code'", rule, start + 1)
            return [Lexeme("HAS", start, node=HasCode())], end
        if name in GATES:
            raise RuleError(f"expected a comparison such as {name}>=10", rule, start + 1)
        if name not in FIELDS:
            raise RuleError(
                f"unknown field {scope.group(1)!r}: expected one of {', '.join(FIELDS)}"
                " (to search for text with a colon, put it in quotes)",
                rule,
                start + 1,
            )
        if after >= len(rule) or not _starts_term(rule[after]):
            raise RuleError(f"expected a word, a quoted phrase, a /regex/ or '(' after '{name}:'", rule, after + 1)
        return [Lexeme("SCOPE", start, name)], after  # the scoped term is lexed next
    if _NEAR.fullmatch(word):
        return [Lexeme("NEAR", start, word)], end
    return [Lexeme("WORD", start, word)], end


def words_of(text: str, rule: str, offset: int) -> list[Word]:
    """The words of a bare word or quoted phrase: ``=`` before a word makes it exact (``=SAM``),
    and a ``*`` may only end a word (``diffus*``), after at least :data:`MIN_PREFIX` letters or
    digits of it (``3D*``, ``RTX4*``)."""
    words: list[Word] = []
    for chunk in re.finditer(r"\S+", text):
        at = chunk.start()
        body = chunk.group()
        exact = body.startswith("=")
        if exact:
            body, at = body.lstrip("="), at + len(body) - len(body.lstrip("="))
        tokens = tokenize(body)
        ends = {token.end: k for k, token in enumerate(tokens)}
        prefixes: set[int] = set()
        for position, char in enumerate(body):
            if char != "*":
                continue
            column = offset + at + position + 1
            k = ends.get(position)
            followed = position + 1 < len(body) and (body[position + 1] == "*" or bool(tokenize(body[position + 1])))
            if k is None or followed:
                raise RuleError("'*' can only end a word, as in diffus*", rule, column)
            if exact:
                raise RuleError("'=' (this exact word) and '*' (words that begin so) do not go together", rule, column)
            # "3D*": D follows 3; only letters and digits count (":0*" is a one-digit prefix)
            if not (k or words) and sum(char.isalnum() for char in body[: tokens[k].end]) < MIN_PREFIX:
                raise RuleError(f"a prefix needs at least {MIN_PREFIX} letters or digits before '*'", rule, column)
            prefixes.add(k)
        words.extend(Word(body[t.start : t.end], k in prefixes, exact) for k, t in enumerate(tokens))
    return words


# -- parser ----------------------------------------------------------------------------------
class Parser:
    """Recursive descent over the lexemes of one rule; every error carries the column.

    ``legacy`` reads ``-`` as rules stored before version 4 of the store meant it: like ``NOT``,
    over the whole phrase after it (``-a b`` was NOT "a b"); only the migration asks for it.
    """

    def __init__(self, rule: str, legacy: bool = False) -> None:
        self.rule = rule
        self.lexemes = lex(rule)
        self.legacy = legacy
        self.at = 0
        self.depth = 0
        self.scope: str | None = None
        self.regexes = 0
        self.prefixes = 0
        self.warnings: list[str] = []

    def error(self, message: str, lexeme: Lexeme | None = None) -> RuleError:
        return RuleError(message, self.rule, (lexeme or self.peek()).column + 1)

    def peek(self) -> Lexeme:
        return self.lexemes[self.at]

    def take(self) -> Lexeme:
        lexeme = self.lexemes[self.at]
        self.at += 1
        return lexeme

    def parse(self) -> Node:
        node = self.parse_or()
        extra = self.peek()
        if extra.kind == ")":
            raise self.error("unexpected ')' without a matching '('")
        assert extra.kind == "END", extra
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while self.peek().kind == "OR":
            self.take()
            children.append(self.parse_and())
        return _flat(Or, children)

    def parse_and(self) -> Node:
        children = [self.parse_unary()]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                self.take()
            elif kind in ("END", ")", "OR"):
                break
            children.append(self.parse_unary())
        return _flat(And, children)

    def parse_unary(self) -> Node:
        lexeme = self.peek()
        if lexeme.kind == "NOT" or (lexeme.kind == "-" and self.legacy):
            self.take()
            self.enter(lexeme)
            child = self.parse_unary()
            self.depth -= 1
            return Not(child)
        if lexeme.kind == "-":
            return self.parse_single()
        return self.parse_primary()

    def parse_single(self) -> Node:
        """``-`` and the one word, quoted phrase, field, gate, regex or group right after it."""
        lexeme = self.take()
        self.enter(lexeme)
        following = self.peek()
        if following.kind == "-":
            child = self.parse_single()
        elif following.kind == "WORD":
            self.take()
            child = self.phrase_of([following])
        else:
            child = self.parse_primary()
        self.depth -= 1
        return Not(child)

    def enter(self, lexeme: Lexeme) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"rule is nested more than {MAX_DEPTH} levels deep", lexeme)

    def parse_primary(self) -> Node:
        lexeme = self.peek()
        kind = lexeme.kind
        if kind == "(":
            return self.parse_group()
        if kind == "SCOPE":
            return self.parse_scope()
        if kind in ("GATE", "HAS"):
            if self.scope:
                raise self.error(f"'{lexeme.text or 'has:code'}' cannot be inside '{self.scope}:'")
            self.take()
            assert lexeme.node is not None
            return lexeme.node
        if kind == "REGEX":
            self.take()
            self.regexes += 1
            if self.regexes > MAX_REGEXES:
                raise self.error(
                    f"more than {MAX_REGEXES} regular expressions in one rule: split it into several", lexeme
                )
            assert lexeme.node is not None
            return lexeme.node
        if kind in ("WORD", "QUOTED"):
            return self.parse_near()
        if kind == "END":
            previous = self.lexemes[self.at - 1] if self.at else lexeme
            after = {"AND": "AND", "OR": "OR", "NOT": "NOT", "-": "'-'", "NEAR": previous.text}.get(previous.kind, "")
            hint = f" after {after}" if self.at and after else ""
            raise self.error(f"expected a word or phrase{hint}")
        if kind == ")":
            raise self.error("expected a word or phrase before ')'")
        raise self.error(f"expected a word or phrase before {lexeme.text or kind}")

    def parse_group(self) -> Node:
        opening = self.take()
        self.enter(opening)
        if self.peek().kind == ")":
            raise self.error("empty parentheses: expected a word or phrase inside")
        node = self.parse_or()
        if self.peek().kind != ")":
            raise self.error("missing ')'", opening)
        self.take()
        self.depth -= 1
        return node

    def parse_scope(self) -> Node:
        lexeme = self.take()
        if self.scope:
            raise self.error(f"'{lexeme.text}:' cannot be inside '{self.scope}:'", lexeme)
        following = self.peek()
        if following.kind == "SCOPE":
            raise self.error(f"'{following.text}:' cannot be inside '{lexeme.text}:'", following)
        if following.kind not in ("(", "WORD", "QUOTED", "REGEX"):
            raise self.error(f"expected a word, a quoted phrase, a /regex/ or '(' after '{lexeme.text}:'", following)
        self.scope = lexeme.text
        child = self.parse_primary()
        self.scope = None
        return Scope(lexeme.text, child)

    def parse_near(self) -> Node:
        """A phrase, or two joined by ``NEAR/n`` (within n words of each other, either order)."""
        left = self.parse_phrase()
        near = self.peek()
        if near.kind != "NEAR":
            return left
        self.take()
        if self.peek().kind not in ("WORD", "QUOTED"):
            raise self.error(f"expected a word or phrase after {near.text}")
        right = self.parse_phrase()
        distance = int(near.text.split("/")[1])
        if distance > MAX_NEAR:
            raise self.error(f"{near.text}: at most NEAR/{MAX_NEAR}", near)
        if self.peek().kind == "NEAR":
            raise self.error("NEAR joins two words or phrases: add a third with AND")
        return Near(left, right, distance)

    def parse_phrase(self) -> Phrase:
        first = self.take()
        lexemes = [first]
        if first.kind == "WORD":  # consecutive bare words make one phrase
            while self.peek().kind == "WORD":
                lexemes.append(self.take())
        return self.phrase_of(lexemes)

    def phrase_of(self, lexemes: list[Lexeme]) -> Phrase:
        first = lexemes[0]
        words = []
        for lexeme in lexemes:
            words.extend(words_of(lexeme.text, self.rule, lexeme.column + (lexeme.kind == "QUOTED")))
        if not words:
            what = "inside the quotes" if first.kind == "QUOTED" else "here"
            raise self.error(f"expected a word with at least one letter or digit {what}", first)
        self.prefixes += sum(word.prefix for word in words)
        if self.prefixes > MAX_PREFIXES:
            raise self.error(f"more than {MAX_PREFIXES} words ending in '*' in one rule", lexemes[-1])
        if first.kind == "WORD":
            self.warn_misreadings(lexemes)
        # cs.CV prints back as written; "video audio" for video|audio, to show how it was read
        one = len(lexemes) == 1 and first.kind == "WORD" and len(words) > 1 and not set(first.text) & set("|,")
        return Phrase(tuple(words), first.text if one else "")

    def warn_misreadings(self, lexemes: list[Lexeme]) -> None:
        """Bare words that people mean as operators: ``video or audio``, ``video | audio``,
        ``gaussian splatting, nerf`` are each read as one phrase, which is rarely what was meant."""
        phrase = " ".join(lexeme.text for lexeme in lexemes)
        for k, lexeme in enumerate(lexemes):
            inside = 0 < k < len(lexemes) - 1
            if inside and lexeme.text.upper() in ("OR", "AND"):
                word = lexeme.text.upper()
                self.warnings.append(
                    f"'{lexeme.text}' is read as a word of the phrase \"{phrase}\"; write {word} for the operator"
                )
            elif "|" in lexeme.text:
                self.warnings.append(f"'|' is not an operator (in \"{phrase}\"): write OR")
            elif "," in lexeme.text.rstrip(",") or (lexeme.text.endswith(",") and k < len(lexemes) - 1):
                self.warnings.append(
                    f'a comma does not separate words (in "{phrase}"): write OR, or give each its own rule'
                )


def _flat(kind: type[And] | type[Or], children: list[Node]) -> Node:
    if len(children) == 1:
        return children[0]
    flat: list[Node] = []
    for child in children:
        flat.extend(child.children if isinstance(child, kind) else (child,))
    return kind(tuple(flat))


def parse_node(rule: str) -> Node:
    """Parse one rule's text into a tree, or raise :class:`RuleError` naming the column."""
    return parse_with_warnings(rule)[0]


def parse_with_warnings(rule: str, legacy: bool = False) -> tuple[Node, tuple[str, ...]]:
    """The tree, and what the parse read literally that people often mean otherwise."""
    if not rule.strip():
        raise RuleError("empty rule: expected a word or phrase", rule, 1)
    if len(rule) > MAX_RULE_LENGTH:
        raise RuleError(f"rule is longer than {MAX_RULE_LENGTH} characters", rule, MAX_RULE_LENGTH + 1)
    parser = Parser(rule, legacy)
    node = parser.parse()
    return node, tuple(dict.fromkeys(parser.warnings))


RULE_SYNTAX = 2  # 1: ``-`` negated the whole phrase after it; 2: the one word, phrase or group


def upgraded_rules(rules: Sequence[str], syntax: int) -> list[str]:
    """Rules written under rule syntax ``syntax``, as they read under :data:`RULE_SYNTAX` with the
    meaning they had (a journal line or a confirm link older than the change)."""
    if syntax >= RULE_SYNTAX:
        return list(rules)
    return [legacy_rewrite(rule) or rule for rule in rules]


def legacy_rewrite(rule: str) -> str | None:
    """For a rule stored when ``-`` negated the whole phrase after it: the text that means the same
    now (its canonical form, ``-a b`` → ``NOT "a b"``), or None where nothing changes (or it does
    not parse, which the rule's owner is told about elsewhere)."""
    if "-" not in rule:
        return None
    try:
        old = parse_with_warnings(rule, legacy=True)[0]
    except RuleError:
        return None
    try:
        if parse_node(rule) == old:
            return None
    except RuleError:
        pass
    return show(old)


def pointer(error: RuleError, indent: int = 2) -> str:
    """The rule and a caret under the column of ``error``, for a terminal (two lines)."""
    line = error.rule.replace("\n", " ").replace("\t", " ")
    return f"{' ' * indent}{line}\n{' ' * (indent + max(0, error.column - 1))}^"
