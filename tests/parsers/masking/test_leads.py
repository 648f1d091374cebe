"""Rule leads: the cheap stdlib search that decides where the regex engine runs must never skip a match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.masking import BUILTIN, Rule, StreamMasker, mask_text, select
from tests.parsers.masking.fixtures import AWS_SECRET, NEAR_MISSES, TRUE_POSITIVES
from tests.parsers.masking.strategies import texts

RULES = select()

# Pieces of every rule's lead and pattern, so that random text often comes close to a match.
_ANCHORS = [
    "-----BEGIN ",
    "RSA PRIVATE KEY-----",
    "-----END ",
    '"private_key_id"',
    "\\",
    '"',
    ": ",
    "AKIA",
    "ASIA",
    "aws_secret_access_key",
    "SECRET",
    "\u017fecret",
    "sk-",
    "proj-",
    "ghp_",
    "github_pat_",
    "xoxb-",
    "eyJ",
    "://",
    "@",
    ".org",
    "4111",
    " ",
    "-",
    "DE89",
    "0123456789abcdef",
]
near_texts = st.one_of(
    texts,
    st.lists(
        st.one_of(st.sampled_from(_ANCHORS), st.text(alphabet='aA0 .@:/-_\\"eyJk', max_size=6)), max_size=14
    ).map("".join),
)


def candidate_starts(rule: Rule, text: str, *, final: bool) -> list[int]:
    """Every position where ``rule`` matches, or (not ``final``) matches as far as the text goes."""
    out: list[int] = []
    pos = 0
    while (match := rule.pattern.search(text, pos, partial=not final)) is not None:
        if match.start() == len(text):  # the empty partial match at the very end
            break
        out.append(match.start())
        pos = match.start() + 1
    return out


def assert_lead_admits(rule: Rule, text: str) -> None:
    for final in (False, True):
        lead = rule.anchors if final else rule.starts
        exact = rule.exact_complete if final else rule.exact
        assert lead is not None
        assert exact is not None
        for start in candidate_starts(rule, text, final=final):
            hit = lead.search(text, start)
            assert hit is not None, (rule.name, final, start)
            assert hit.start() <= start + rule.back, (rule.name, final, start, hit.start())
            assert exact.match(text, start) is not None, (rule.name, final, start)  # right there


@given(near_texts.flatmap(lambda text: st.tuples(st.just(text), st.integers(0, len(text)))))
def test_every_lead_admits_every_match_and_partial_match(case: tuple[str, int]) -> None:
    text, cut = case
    for rule in BUILTIN.values():
        assert_lead_admits(rule, text)
        assert_lead_admits(rule, text[:cut])  # cut short: partial matches at the end


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_leads_admit_the_fixtures_at_every_cut(rule: str, text: str, secret: str) -> None:
    for cut in range(len(text) + 1):
        assert_lead_admits(BUILTIN[rule], text[:cut])


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_leads_admit_near_misses(text: str) -> None:
    for rule in BUILTIN.values():
        assert_lead_admits(rule, text)


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_secret_with_its_anchor_split_across_pieces(rule: str, text: str, secret: str) -> None:
    """The lead's literal (``sk-``, ``@``, ``://``...) arrives one character per piece; the rest whole."""
    anchors = BUILTIN[rule].anchors
    assert anchors is not None
    hit = anchors.search(text)
    assert hit is not None
    start, end = max(hit.start() - 1, 0), hit.end() + 1
    pieces = [text[:start], *text[start:end], text[end:]]
    masker = StreamMasker(RULES)
    out = "".join(masker.feed(piece) for piece in pieces) + masker.finish()
    assert out == mask_text(RULES, text)[0]
    assert secret not in out
    assert f"[MASKED:{rule}]" in out


def test_case_insensitive_name_with_a_long_s() -> None:
    """The aws_secret_key pattern is case-insensitive, and so is its lead: U+017F folds to "s"."""
    text = f"\u017fecret_access_key = {AWS_SECRET}"
    masked, edits = mask_text(RULES, text)
    assert AWS_SECRET not in masked
    assert [edit.rule for edit in edits] == ["aws_secret_key"]
    masker = StreamMasker(RULES)
    assert "".join(masker.feed(char) for char in text) + masker.finish() == masked
