"""Table-driven tests of the streaming reasoning parser on every Qwen3 output shape."""
import pytest

from core.events import AnswerDelta, ReasoningDelta
from core.reasoning import ReasoningParser, split_reasoning

# (case, output, starts_in_reasoning, expected reasoning, expected answer)
CASES = [
    ("thinking", "<think>\nTwo plus three.\n</think>\n\nThe answer is 5.", False, "Two plus three.", "The answer is 5."),
    ("thinking, expected", "<think>\nTwo plus three.\n</think>\n\nThe answer is 5.", True, "Two plus three.", "The answer is 5."),
    ("multi-line reasoning", "<think>\nLine one.\n\nLine two.\n</think>\n\nDone.", True, "Line one.\n\nLine two.", "Done."),
    ("empty block (/no_think)", "<think>\n\n</think>\n\nThe answer is 5.", True, "", "The answer is 5."),
    ("no tags (thinking off)", "The answer is 5.", False, "", "The answer is 5."),
    ("missing opening tag", "Reasoning in the prompt's block.\n</think>\n\nAnswer.", True, "Reasoning in the prompt's block.", "Answer."),
    ("truncated reasoning", "<think>\nI was thinking about", True, "I was thinking about", ""),
    ("truncated, no opening tag", "I was thinking about", True, "I was thinking about", ""),
    ("cut inside closing tag", "<think>\nabc\n</thi", True, "abc\n</thi", ""),
    ("answer keeps inner whitespace", "<think>x</think>A  b\n\nc\n", False, "x", "A  b\n\nc"),
    ("leading whitespace before tag", "\n\n<think>r</think>a", False, "r", "a"),
    ("text resembling a tag", "<thinking is fun", False, "", "<thinking is fun"),
    ("answer mentions a tag", "<think>r</think>use <think> tags", False, "r", "use <think> tags"),
    ("empty output", "", True, "", ""),
    ("only whitespace", "\n\n", False, "", ""),
]


def _chunks_every_split(text):
    """Every way of cutting ``text`` in two, plus one character at a time."""
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    yield list(text)


@pytest.mark.parametrize("name,output,starts,reasoning,answer", CASES, ids=[c[0] for c in CASES])
def test_parser_splits_identically_however_the_stream_is_chunked(name, output, starts, reasoning, answer):
    for chunks in _chunks_every_split(output):
        parser = ReasoningParser(starts_in_reasoning=starts)
        events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finalize()
        got_reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        got_answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
        assert (got_reasoning, got_answer) == (reasoning, answer), chunks
        assert (parser.reasoning, parser.answer) == (reasoning, answer)
        assert all(e.text for e in events), "no empty deltas"


def test_reasoning_streams_before_the_closing_tag_arrives():
    parser = ReasoningParser(starts_in_reasoning=True)
    assert parser.feed("<think>\nStep one") == [ReasoningDelta("Step one")]
    assert parser.in_reasoning
    assert parser.feed(" and two.\n</th") == [ReasoningDelta(" and two.")]
    assert parser.feed("ink>\n\nOK") == [AnswerDelta("OK")]
    assert not parser.in_reasoning and parser.saw_close


def test_answer_never_starts_until_the_opening_tag_is_ruled_out():
    parser = ReasoningParser()
    assert parser.feed("<th") == []
    assert parser.feed("ink>") == []
    assert parser.feed("x") == [ReasoningDelta("x")]


def test_split_reasoning_whole_text():
    assert split_reasoning("<think>\nr\n</think>\n\na") == ("r", "a")
    assert split_reasoning("plain") == ("", "plain")
