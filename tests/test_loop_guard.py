"""The loop guard's detector (core.loop_guard), table-driven: what is a loop, what is not, and
how soon a loop is caught, whatever the size of the deltas."""
from __future__ import annotations

import json

import pytest

from core.loop_guard import MIN_LOOP_CHARS, MIN_REPEATS, LoopGuard
from tinymodels.script import CASES, ENDLESS_UNIT, FOLLOW_UP_CASES, LEAKED_HISTORY_CASE, SCRIPTED_TEXT, TOOL_CASES

pytestmark = pytest.mark.timeout(60)


def feed(text: str, step: int = 3, guard: LoopGuard | None = None) -> tuple[LoopGuard, int | None]:
    """Feed ``text`` in ``step``-character deltas; (guard, characters fed when it fired or None)."""
    guard = guard or LoopGuard()
    for start in range(0, len(text), step):
        if guard.feed(text[start:start + step]):
            return guard, min(start + step, len(text))
    return guard, None


SENTENCE = "I should double-check the arithmetic before answering. "
PARAGRAPH = ("Wait, let me reconsider the problem from the start, because the numbers do not add up yet. "
             "Two plus three is five, and five is the answer, but I want to be sure of it. ")
NUMBERED = "".join(f"{i}. Step {i}: add one to the total.\n" for i in range(1, 120))
TABLE = "| n | square |\n|---|---|\n" + "".join(f"| {i} | {i * i} |\n" for i in range(1, 200))
JSON_LIST = json.dumps([{"id": i, "name": f"item {i}", "price": 10 + i, "tags": ["a", "b"]} for i in range(60)],
                       indent=2)
CODE = ("def reset(state):\n    x = 0\n    x = 0\n    y = 0\n    for i in range(10):\n        state[i] = 0\n"
        "        state[i] = 0\n    return state\n\n") * 3
PROSE = SCRIPTED_TEXT * 2 + " " + " ".join(f"Sentence {i} says something new about the sea." for i in range(80))
MARKDOWN = "# Title\n\n" + "-" * 60 + "\n\n" + "=" * 80 + "\n\nSome text.\n" + "| a | b | c | d | e |\n|" + \
    "---|" * 5 + "\n"
SPACES = "def f():\n" + "".join(" " * 8 + f"value_{i} = {i}\n" for i in range(100))

NOT_LOOPS = {
    "prose": PROSE,
    "numbered list": NUMBERED,
    "table": TABLE,
    "JSON list of similar objects": JSON_LIST,
    "code with repeated lines": CODE,
    "a sentence repeated a few times": SENTENCE * (MIN_REPEATS - 1) if len(SENTENCE) * (MIN_REPEATS - 1) > 240
    else SENTENCE * 3,
    "rules and separators": MARKDOWN,
    "indented code": SPACES,
    "la la la, briefly": "la" + " la" * 40,  # 122 characters: a short refrain is fine
    "a 200-character run of one character": "Look:" + "!" * 200 + " done.",
    "the README": open("README.md", encoding="utf-8").read(),
}

# (text, its period, at most how many characters it takes to catch it)
LOOPS = {
    "la la la": ("la" + ENDLESS_UNIT * 400, 3, MIN_LOOP_CHARS + 3 + 32),
    "a repeated sentence": ("Let me think. " + SENTENCE * 40, len(SENTENCE), 14 + MIN_REPEATS * len(SENTENCE) + 32),
    "a repeated paragraph": ("Okay. " + PARAGRAPH * 12, len(PARAGRAPH), 6 + MIN_REPEATS * len(PARAGRAPH) + 32),
    "newlines forever": ("The answer is\n" + "\n" * 400, 1, 14 + MIN_LOOP_CHARS + 32),
    "a word over and over": ("So " + "wait " * 200, 5, 3 + MIN_LOOP_CHARS + 32),
    "a list item over and over": ("Steps:\n" + "- add one to the total\n" * 60, 23, 7 + MIN_LOOP_CHARS + 32),
    "a loop after normal text": (PROSE + SENTENCE * 30, len(SENTENCE), len(PROSE) + MIN_REPEATS * len(SENTENCE) + 32),
}


@pytest.mark.parametrize("step", [1, 3, 17, 100])
@pytest.mark.parametrize("name", sorted(NOT_LOOPS))
def test_normal_text_never_trips_it(name, step):
    guard, fired = feed(NOT_LOOPS[name], step)
    assert fired is None, f"{name}: {guard.loop}"
    assert not guard.looping


@pytest.mark.parametrize("step", [1, 3, 17, 100])
@pytest.mark.parametrize("name", sorted(LOOPS))
def test_a_loop_is_caught_within_a_bounded_number_of_characters(name, step):
    text, period, bound = LOOPS[name]
    guard, fired = feed(text, step)
    assert fired is not None, name
    assert fired <= bound + step, (name, fired, bound)
    assert guard.loop.period_chars == period
    assert guard.loop.repeats >= MIN_REPEATS and (guard.loop.repeats + 1) * period >= MIN_LOOP_CHARS
    assert guard.feed("anything else") and guard.looping  # it stays tripped


def test_the_whole_loop_in_one_delta_is_caught():
    guard = LoopGuard()
    assert guard.feed("la" + ENDLESS_UNIT * 159)
    assert guard.loop.period_chars == 3 and guard.loop.repeats >= 150


def test_a_loop_split_between_reasoning_and_answer_is_caught():
    """The guard is fed both, in order: a loop that goes on across the boundary counts."""
    guard = LoopGuard()
    reasoning, answer = (SENTENCE * 5, SENTENCE * 5)
    assert not guard.feed(reasoning)
    assert guard.feed(answer) and guard.loop.period_chars == len(SENTENCE)


@pytest.mark.parametrize("kwargs, text, fires", [
    ({"min_repeats": 4, "min_loop_chars": 40}, "ab, " * 11, True),
    ({"min_repeats": 4, "min_loop_chars": 40}, "ab, " * 9, False),  # 36 characters
    ({"min_period_chars": 4}, "la" + ENDLESS_UNIT * 200, True),  # period 6 (" la la") is in range
    ({"max_period_chars": 50}, "Okay. " + PARAGRAPH * 12, False),  # its period is longer
    ({"min_repeats": 20}, "Let me think. " + SENTENCE * 12, False),
])
def test_thresholds(kwargs, text, fires):
    assert feed(text, 7, LoopGuard(**kwargs))[1] is not None if fires else feed(text, 7, LoopGuard(**kwargs))[1] is None


@pytest.mark.parametrize("kwargs", [{"min_period_chars": 0}, {"min_period_chars": 10, "max_period_chars": 5},
                                    {"min_repeats": 1}])
def test_bad_thresholds_are_refused(kwargs):
    with pytest.raises(ValueError):
        LoopGuard(**kwargs)


def test_the_window_is_bounded():
    guard = LoopGuard()
    feed(PROSE * 20, 50, guard)
    assert not guard.looping and len(guard._text) <= 2 * guard.window_chars
    assert guard.fed_chars == len(PROSE * 20)


def test_empty_deltas_change_nothing():
    guard = LoopGuard()
    assert not any(guard.feed("") for _ in range(1000)) and guard.fed_chars == 0


SCRIPTED = [c for c in [*CASES, *FOLLOW_UP_CASES, LEAKED_HISTORY_CASE, *TOOL_CASES] if c.ends]


@pytest.mark.parametrize("case", SCRIPTED, ids=lambda c: c.name)
def test_no_scripted_reply_of_the_tiny_models_trips_it(case):
    for text in (case.reasoning, case.answer, case.reasoning + case.answer, case.completion):
        for step in (1, 4, len(text) or 1):
            assert feed(text, step)[1] is None, (case.name, text)


def test_the_tiny_models_endless_song_trips_it():
    endless = next(c for c in CASES if not c.ends)
    guard, fired = feed(endless.answer, 4)  # the trained 160 repeats; the model goes on past them
    assert fired is not None and fired <= MIN_LOOP_CHARS + 40 and guard.loop.span.strip() == "la"
