"""The masking scan: where rules match in a text, whole or fed in pieces, with the same answer either way.

Whole-text semantics: scan left to right; at each point take the match that starts earliest (on a tie,
the rule listed first); a match whose checksum fails is skipped (the scan goes on one character later);
after a match the scan resumes at its end. ``TextScan`` gives that answer for a text fed in any pieces:
it decides a stretch only once no continuation could change it, using the ``regex`` module's partial
matches. It holds back only the tail that could still be part of a match and never more than
``max_hold_chars`` (past that the oldest held characters are released unmasked: a pattern whose matches
run that long is not streamable; every built-in is far shorter). A rule's lead (``Rule.starts``, a
fast stdlib search for a literal such as ``sk-`` or ``@``) tells where it could begin at the earliest, so
the regex engine runs only where a match, or the start of one cut short by the end, could be.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import NamedTuple

import regex

from parsers.masking.detectors import SECRET_GROUP, Rule

DEFAULT_MAX_HOLD_CHARS = 32 * 1024
CONTEXT_CHARS = 64  # released characters kept for lookbehinds (the built-ins look back one)


Rules = Sequence[Rule]


class Edit(NamedTuple):
    """Replace characters ``[start, end)`` of the whole text (stream offsets) with ``text``."""

    start: int
    end: int
    text: str
    rule: str


class _Candidate(NamedTuple):
    start: int
    rule: Rule
    match: regex.Match[str]
    decided: bool  # no continuation of the text can change this match


class TextScan:
    """Feed text in pieces; learn which prefix is decided and the edits inside it."""

    def __init__(self, rules: Rules, *, max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS) -> None:
        self._rules = tuple(rules)
        self._group = _group(self._rules)
        self._exact = _exact_group(self._rules)
        self._max_hold = max_hold_chars
        self._buf = ""  # text from stream offset _base: released context, then the undecided tail
        self._base = 0
        self._decided = 0  # stream offset up to which everything is decided
        # Per rule: the stream offset before which it can start no match, complete or partial, ever.
        self._resume = [0] * len(self._rules)
        self._group_resume = 0  # the same for every rule of the group
        self.forced_releases = 0  # times the hold limit released text unscanned

    @property
    def decided(self) -> int:
        return self._decided

    def text(self, start: int, end: int) -> str:
        """Characters ``[start, end)`` (stream offsets) still in the buffer."""
        return self._buf[start - self._base : end - self._base]

    def add(self, text: str) -> None:
        """Append text without scanning it yet (scan once per read, not once per piece)."""
        self._buf += text

    def scan(self, *, final: bool) -> list[Edit]:
        """Decide what can be decided; returns the new edits. ``final``: no more text will come."""
        return self._scan(final=final)

    def trim(self) -> None:
        """Forget released text except the lookbehind context. Call after reading ``text()``."""
        cut = self._decided - CONTEXT_CHARS - self._base
        if cut > 0:
            self._buf = self._buf[cut:]
            self._base += cut

    def _scan(self, *, final: bool) -> list[Edit]:
        buf = self._buf
        end = len(buf)
        base = self._base
        pos = self._decided - base
        edits: list[Edit] = []
        self._skip_group(buf, pos, end, final)
        resume = self._resume
        exact = self._exact
        while pos < end:
            best: _Candidate | None = None
            if exact is not None and end - pos <= _GROUP_MAX_CHARS:
                # Short text: one search finds the first place any rule can begin and the first rule
                # that can begin there (earlier rules cannot, later ones lose the tie). If its
                # candidate starts there, that is the answer; else every rule is asked.
                hit = exact[final].search(buf, pos, end)
                if hit is None:
                    pos = end
                    break
                pos = hit.start()
                found = _candidate(self._rules[(hit.lastindex or 1) - 1], buf, pos, end, final)
                if found is not None and found.start == pos:
                    best = found
            for i, rule in enumerate(self._rules if best is None else ()):
                if resume[i] - base >= end:
                    continue  # this rule can begin nowhere in the rest
                found = self._first(i, rule, buf, pos, end, final)
                if found is not None and (best is None or found.start < best.start):
                    best = found
                    if found.start == pos:
                        break  # nothing can start earlier, and later rules lose ties
            if best is None:
                pos = end
                break
            if not best.decided:
                pos = best.start
                break
            match = best.match
            start, stop = match.span(SECRET_GROUP) if SECRET_GROUP in match.re.groupindex else match.span()
            edits.append(
                Edit(self._base + start, self._base + stop, best.rule.replacement(match), best.rule.name)
            )
            pos = max(match.end(), pos + 1)
        if not final and end - pos > self._max_hold:
            pos = end - self._max_hold
            self.forced_releases += 1
        self._decided = self._base + pos
        return edits

    def _skip_group(self, buf: str, pos: int, end: int, final: bool) -> None:
        """One search for the whole group's leads moves each member's resume point past the text where
        none of them can begin. Only for short text: over long text ``re`` tries every alternative at
        every character, and each rule's own lead (which ``re`` skips to in C) is faster."""
        group = self._group
        if group is None:
            return
        start = max(pos, self._group_resume - self._base)
        if end - start > _GROUP_MAX_CHARS:
            return
        members, streaming, complete = group
        hit = (complete if final else streaming).search(buf, start, end)
        upto = self._base + (end if hit is None else hit.start())
        self._group_resume = upto
        resume = self._resume
        for i in members:
            if resume[i] < upto:
                resume[i] = upto

    def _first(self, i: int, rule: Rule, buf: str, pos: int, end: int, final: bool) -> _Candidate | None:
        """``_candidate``, skipping what earlier scans ruled out and text where the rule cannot begin."""
        base = self._base
        start = max(pos, self._resume[i] - base)
        lead = rule.anchors if final else rule.starts
        if start < end and lead is not None:
            first = lead.search(buf, start, end)
            start = end if first is None else max(start, first.start() - rule.back)
        found = _candidate(rule, buf, start, end, final) if start < end else None
        self._resume[i] = base + (end if found is None else found.start)
        return found


def _candidate(rule: Rule, buf: str, pos: int, end: int, final: bool) -> _Candidate | None:
    """The first place at or after ``pos`` where ``rule`` matches or could still match."""
    pattern = rule.pattern
    while True:
        match = pattern.search(buf, pos, end, partial=not final)
        if match is None:
            return None
        start = match.start()
        if match.partial:
            return _Candidate(start, rule, match, decided=False)
        # A complete match may still grow (a longer e-mail domain) if the text so far could be the
        # start of a longer one.
        if not final and pattern.fullmatch(buf, start, end, partial=True) is not None:
            return _Candidate(start, rule, match, decided=False)
        if rule.check is None or rule.check(match.group()):
            return _Candidate(start, rule, match, decided=True)
        pos = start + 1


_GROUP_MAX_CHARS = 64
_Group = tuple[tuple[int, ...], re.Pattern[str], re.Pattern[str]]


@functools.lru_cache(maxsize=64)
def _group(rules: tuple[Rule, ...]) -> _Group | None:
    """The rules whose lead hits where they begin (``back`` 0), and their leads in one pattern each for
    partial and complete matches; None when fewer than two rules qualify."""
    members = tuple(i for i, rule in enumerate(rules) if rule.back == 0 and rule.starts and rule.anchors)
    if len(members) < 2:
        return None
    streaming = "|".join(f"(?:{lead.pattern})" for i in members if (lead := rules[i].starts) is not None)
    complete = "|".join(f"(?:{lead.pattern})" for i in members if (lead := rules[i].anchors) is not None)
    return members, re.compile(streaming), re.compile(complete)


@functools.lru_cache(maxsize=64)
def _exact_group(rules: tuple[Rule, ...]) -> tuple[re.Pattern[str], re.Pattern[str]] | None:
    """Every rule's exact lead in one pattern, group ``i + 1`` for rule ``i``, for text that may go on
    and for complete matches; None when a rule has none (a custom rule)."""
    streaming = [rule.exact for rule in rules]
    complete = [rule.exact_complete for rule in rules]
    if not rules or None in streaming or None in complete:
        return None
    return (
        re.compile("|".join(f"({lead.pattern})" for lead in streaming if lead is not None)),
        re.compile("|".join(f"({lead.pattern})" for lead in complete if lead is not None)),
    )


def apply(text: str, edits: Sequence[Edit], offset: int = 0) -> str:
    """``text`` (from stream offset ``offset``) with ``edits`` applied; the edits lie inside it, in order."""
    if not edits:
        return text
    out: list[str] = []
    at = 0
    for edit in edits:
        out.append(text[at : edit.start - offset])
        out.append(edit.text)
        at = edit.end - offset
    out.append(text[at:])
    return "".join(out)


def may_match(rules: Rules, text: str) -> bool:
    """False only when no rule can match anywhere in ``text`` as it stands (no more text will come)."""
    return any(rule.anchors is None or rule.anchors.search(text) is not None for rule in rules)


def mask_text(rules: Rules, text: str) -> tuple[str, list[Edit]]:
    """Mask a whole text at once."""
    if not may_match(rules, text):
        return text, []
    scan = TextScan(rules)
    scan.add(text)
    edits = scan.scan(final=True)
    return apply(text, edits), edits


class StreamMasker:
    """Masks a text stream fed in pieces: ``feed()`` returns what is decided, ``finish()`` the rest.

    For any split, ``"".join(feed(p) for p in pieces) + finish()`` equals ``mask_text`` of the whole.
    """

    def __init__(self, rules: Rules, *, max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS) -> None:
        self._scan = TextScan(rules, max_hold_chars=max_hold_chars)
        self._released = 0
        self.edits: list[Edit] = []  # every edit so far, for the record of what was masked

    @property
    def held(self) -> int:
        """Characters fed but not yet released."""
        return len(self._scan._buf) + self._scan._base - self._released

    def feed(self, text: str) -> str:
        self._scan.add(text)
        return self._release(self._scan.scan(final=False))

    def finish(self) -> str:
        return self._release(self._scan.scan(final=True))

    def _release(self, edits: list[Edit]) -> str:
        scan = self._scan
        out = apply(scan.text(self._released, scan.decided), edits, self._released)
        self._released = scan.decided
        scan.trim()
        self.edits.extend(edits)
        return out


__all__ = [
    "CONTEXT_CHARS",
    "DEFAULT_MAX_HOLD_CHARS",
    "Edit",
    "Rules",
    "StreamMasker",
    "TextScan",
    "apply",
    "mask_text",
    "may_match",
]
