"""The masking rules: built-in detectors (an explicit table) and custom rules from the config.

A rule is a compiled ``regex`` pattern (the ``regex`` module, for its partial matches, which let a stream
hold back only a tail that could still become a match), an optional checksum, and a replacement
template. Every quantifier is bounded, so a match (and what a stream holds back) has a known maximum
length. Pure: no I/O; the raw text a rule sees is never put into an error message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import regex

DEFAULT_TEMPLATE = "[MASKED:{rule}]"
SECRET_GROUP = "secret"  # when a pattern has this named group, only that part is replaced
_NAME = regex.compile(r"[a-z][a-z0-9_]{0,63}")


class RuleError(ValueError):
    """A custom rule that cannot work. The message names the rule and the problem, never sample text."""


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: cheap cache keys
class Rule:
    """One detector: what to find, how to check it, what to put instead."""

    name: str
    pattern: regex.Pattern[str]
    template: str = DEFAULT_TEMPLATE  # "{rule}" is the rule name; \1 and \g<name> are groups
    check: Callable[[str], bool] | None = None  # a checksum the whole match must pass (Luhn, IBAN)
    # The lead, a stdlib ``re`` pattern (fast to search): every match, and every partial match at the
    # end of the text, begins at most ``back`` characters before a place where it matches. Text before
    # its first hit (less ``back``) is skipped without running the regex engine.
    starts: re.Pattern[str] | None = None
    # The lead for complete matches only (no more text will come): ``starts`` without the alternatives
    # that admit a text cut short (``\Z``).
    anchors: re.Pattern[str] | None = None
    back: int = 0
    # Leads that hit exactly where a match (or, in ``exact``, a partial match at the end) can begin;
    # ``starts``/``anchors`` themselves when ``back`` is 0. Searched all at once over short text.
    exact: re.Pattern[str] | None = None
    exact_complete: re.Pattern[str] | None = None

    def replacement(self, match: regex.Match[str]) -> str:
        template = self.template.replace("{rule}", self.name)
        return match.expand(template) if "\\" in template else template


def luhn_valid(text: str) -> bool:
    """The Luhn checksum of the digits in ``text`` (separators ignored) is 0: a plausible card number."""
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False  # one repeated digit (0000 0000 0000 0000) passes Luhn but is no card
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


# ISO 13616 lengths per country; an IBAN whose length does not match its country is no IBAN.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    """ISO 13616: the country's length, and mod-97 of the rearranged number is 1."""
    compact = text.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _rule(
    name: str,
    lead: tuple[str, str],
    pattern: str,
    check: Callable[[str], bool] | None = None,
    *,
    back: int = 0,
    exact: str = "",
) -> Rule:
    """``lead``: the lead for a text that may go on, and the one for complete matches only. The second
    starts with its literal (``re`` finds a literal prefix in C) and looks behind only after it.
    ``exact`` (with ``back``): the exact lead; every ``\\Z`` in it admits a text cut short."""
    starts, anchors = (re.compile(pattern) for pattern in lead)
    exact_starts, exact_complete = starts, anchors
    if exact:
        exact_starts, exact_complete = re.compile(exact), re.compile(exact.replace(r"\Z", "(?!)"))
    return Rule(
        name=name,
        pattern=regex.compile(pattern),
        check=check,
        starts=starts,
        anchors=anchors,
        back=back,
        exact=exact_starts,
        exact_complete=exact_complete,
    )


def _prefix(literal: str) -> str:
    r"""A stdlib pattern for ``literal``, or any of its prefixes (the empty one too) at the end of the text.

    ``_prefix("k-")`` is ``(?:\Z|k(?:\Z|-))``: a lead must also admit a match the text cut short.
    """
    out = ""
    for char in reversed(literal):
        out = rf"(?:\Z|{re.escape(char)}{out})"
    return out


# Order matters only where two rules could start at the same character: the earlier one wins.
# Leads begin with a literal or a character class (stdlib ``re`` then skips ahead in C); a lookbehind
# comes after that first character. ``back``: how far before its lead's hit a match may begin.
BUILTIN: Mapping[str, Rule] = {
    rule.name: rule
    for rule in (
        _rule(
            "private_key",
            (
                "-" + _prefix("----BEGIN "),
                "-----BEGIN ",
            ),  # PEM: PKCS#1/#8, EC, DSA, OpenSSH, encrypted, PGP key blocks
            r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:(?!-----END )[\s\S]){1,16384}"  # tempered, not lazy: no match can run past the END line
            r"-----END (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
        ),
        _rule(
            "gcp_service_account",  # the key id of a service-account JSON key (its private_key is a PEM)
            ('"' + _prefix("private_key_id") + r"|\\\Z", '"private_key_id'),  # after up to 3 backslashes
            r"\\{0,3}\"private_key_id\\{0,3}\"\s{0,4}:\s{0,4}\\{0,3}\"(?P<secret>[0-9a-f]{40})\\{0,3}\"",
            back=3,
            exact=r'\\{0,3}"' + _prefix("private_key_id") + r"|\\{1,3}\Z",
        ),
        _rule(
            "aws_access_key",
            (
                "A(?<![A-Za-z0-9]A)(?:"
                + "|".join(_prefix(rest) for rest in ("KIA", "SIA", "BIA", "CCA"))
                + ")",
                "A(?:KIA|SIA|BIA|CCA)(?<![A-Za-z0-9]....)",
            ),
            r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        ),
        _rule(
            "aws_secret_key",
            # Case-insensitive like the pattern, where U+017F (long s) is an "s" too. 40 base64 characters
            # are common: only after a name that says what they are.
            (
                f"[AaSs\u017f](?i:(?<=a){_prefix('ws')}|(?<=s){_prefix('ecret')})",
                "[AaSs\u017f](?i:(?<=a)ws|(?<=s)ecret)",
            ),
            r"(?i:aws_?secret_?access_?key|aws_?secret(?:_?key)?|secret_?access_?key)"
            r"[\\\"' \t]{0,4}[:=][\\\"' \t]{0,4}"
            r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        ),
        _rule(
            "openai_api_key",
            ("s(?<![A-Za-z0-9_-]s)" + _prefix("k-"), "sk-(?<![A-Za-z0-9_-]...)"),
            r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,256}(?![A-Za-z0-9_-])",
        ),
        _rule(
            "github_token",
            (
                rf"g(?<![A-Za-z0-9_]g)(?:\Z|h(?:\Z|[pousr]{_prefix('_')})|{_prefix('ithub_pat_')})",
                "gh[pousr]_(?<![A-Za-z0-9_]....)|github_pat_(?<![A-Za-z0-9_]...........)",
            ),
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
        ),
        _rule(
            "slack_token",
            (
                rf"x(?<![A-Za-z0-9-]x)(?:\Z|o(?:\Z|x(?:\Z|[abposr]{_prefix('-')})))",
                "xox[abposr]-(?<![A-Za-z0-9-].....)",
            ),
            r"(?<![A-Za-z0-9-])xox[abposr]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])",
        ),
        _rule(
            "jwt",
            ("e(?<![A-Za-z0-9_-]e)" + _prefix("yJ"), "eyJ(?<![A-Za-z0-9_-]...)"),  # base64url of '{"'
            r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{8,2048}"
            r"(?![A-Za-z0-9_.-])",
        ),
        _rule(
            "connection_string_password",  # scheme://user:PASSWORD@host: only the password is replaced
            (
                ":" + _prefix("//") + r"|[A-Za-z0-9+.-]\Z",
                "://",
            ),  # the scheme (1 + 30 characters) holds no ":"
            r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/?#@\"'<>\\]{1,256}"
            r":(?P<secret>[^\s/?#@\"'<>\\]{1,256})@",
            back=31,
            exact=r"[A-Za-z](?<![A-Za-z0-9+.-][A-Za-z])(?:[A-Za-z0-9+.-]{0,30}\Z|[A-Za-z0-9+.-]{1,30}:"
            + _prefix("//")
            + ")",
        ),
        _rule(
            "email",
            (r"@|[A-Za-z0-9._%+-]\Z", "@"),  # after a local part of up to 64 characters
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
            r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,6}"
            r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
            back=64,
            exact=r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-]{2})[A-Za-z0-9._%+-]{0,63}(?:@|\Z)",
        ),
        _rule(  # standing alone: digits glued to letters are ids (chatcmpl-...), not cards
            "card_number",
            (r"[0-9](?<![0-9A-Za-z_][0-9])", r"[0-9](?<![0-9A-Za-z_][0-9])(?:[ -]?[0-9]){12}"),
            r"(?<![0-9A-Za-z_])[0-9](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z_])",
            luhn_valid,
        ),
        _rule(
            "iban",
            (
                r"[A-Z](?<![A-Za-z0-9][A-Z])(?:\Z|[A-Z](?:\Z|[0-9](?:\Z|[0-9])))",
                r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}",
            ),
            r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
            iban_valid,
        ),
    )
}


def custom_rule(name: str, pattern: str, template: str = DEFAULT_TEMPLATE) -> Rule:
    """A rule from the config.

    Raises:
        RuleError: a bad name (lowercase letters, digits, ``_``), a name of a built-in, a pattern that
            does not compile or matches the empty string.
    """
    if not _NAME.fullmatch(name):
        raise RuleError(f"rule name {name!r}: expected lowercase letters, digits and _ (up to 64)")
    if name in BUILTIN:
        raise RuleError(f"rule name {name!r}: taken by a built-in detector")
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise RuleError(f"rule {name!r}: pattern does not compile: {exc}") from None
    if compiled.fullmatch("") is not None:
        raise RuleError(f"rule {name!r}: pattern matches the empty string")
    rule = Rule(name=name, pattern=compiled, template=template)
    try:
        rule.replacement(_probe(compiled))
    except (regex.error, IndexError) as exc:
        raise RuleError(f"rule {name!r}: replacement template: {exc}") from None
    return rule


def _probe(pattern: regex.Pattern[str]) -> regex.Match[str]:
    """Any match object of ``pattern``, to try its template's group references against."""
    probe = regex.compile(f"(?:{pattern.pattern})?")
    match = probe.match("")
    if match is None:  # cannot happen: an optional group always matches the empty string
        raise RuleError("rule pattern cannot be probed")
    return match


def select(
    enabled: Sequence[str] | None = None, disabled: Sequence[str] = (), custom: Sequence[Rule] = ()
) -> list[Rule]:
    """The built-ins (all, or those named in ``enabled``) minus ``disabled``, then the custom rules.

    Raises:
        RuleError: a name that is no built-in detector.
    """
    for name in [*(enabled or ()), *disabled]:
        if name not in BUILTIN:
            raise RuleError(f"unknown detector {name!r}; built-ins are {', '.join(BUILTIN)}")
    names = list(BUILTIN) if enabled is None else list(enabled)
    return [BUILTIN[name] for name in names if name not in disabled] + list(custom)


__all__ = [
    "BUILTIN",
    "DEFAULT_TEMPLATE",
    "SECRET_GROUP",
    "Rule",
    "RuleError",
    "custom_rule",
    "iban_valid",
    "luhn_valid",
    "select",
]
