"""The streaming scan: any split of a text masks exactly like the whole, holding back only a short tail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parsers.masking import StreamMasker, mask_text, select
from tests.parsers.masking.fixtures import AWS_KEY_ID, CARD, EMAIL, PEM, TRUE_POSITIVES
from tests.parsers.masking.strategies import cuts, split, texts

RULES = select()


def streamed(text: str, points: list[int]) -> str:
    masker = StreamMasker(RULES)
    return "".join(masker.feed(piece) for piece in split(text, points)) + masker.finish()


@given(texts.flatmap(lambda text: st.tuples(st.just(text), cuts(len(text)))))
def test_any_split_masks_like_the_whole(case: tuple[str, list[int]]) -> None:
    text, points = case
    assert streamed(text, points) == mask_text(RULES, text)[0]


def test_every_single_split_point_of_each_fixture() -> None:
    for _, text, secret in TRUE_POSITIVES:
        whole = mask_text(RULES, text)[0]
        for cut in range(len(text) + 1):
            assert streamed(text, [cut]) == whole
        assert secret not in streamed(text, list(range(len(text))))  # one character per piece


def test_only_a_tail_that_could_still_match_is_held() -> None:
    masker = StreamMasker(RULES)
    assert masker.feed("The answer is") == "The answer "  # "is" could start an e-mail address
    assert masker.feed(" forty-two. ") == "is forty-two. "
    assert masker.held == 0
    assert masker.feed("Key AKIA") == "Key "
    assert masker.held == 4
    assert masker.feed("IOSFODNN7EXAMPLE") == ""  # complete, but a 21st character would spoil it
    assert masker.feed(" done") == "[MASKED:aws_access_key] "
    assert masker.finish() == "done"


def test_hold_is_bounded_by_the_longest_match() -> None:
    masker = StreamMasker(RULES)
    released = masker.feed(PEM[:-5])  # inside a private key block: held until it ends (or cannot)
    assert released == ""
    assert masker.held == len(PEM) - 5
    assert masker.feed(PEM[-5:] + "\n") == "[MASKED:private_key]\n"
    long_word = "x" * 1000
    assert len(masker.feed(long_word)) >= 1000 - 64  # an e-mail local part is at most 64 characters


def test_hold_limit_releases_unscanned_text() -> None:
    masker = StreamMasker(RULES, max_hold_chars=100)
    out = masker.feed(PEM[:-5])
    assert masker.held == 100
    assert out == PEM[: len(PEM) - 5 - 100]
    assert masker._scan.forced_releases == 1


def test_secret_split_into_single_characters() -> None:
    text = f"mail {EMAIL} card {CARD} key {AWS_KEY_ID}"
    out = streamed(text, list(range(len(text))))
    assert out == "mail [MASKED:email] card [MASKED:card_number] key [MASKED:aws_access_key]"
