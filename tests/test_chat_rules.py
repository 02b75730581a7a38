"""History rules: reasoning never goes back to the model; soft switches pass through as typed."""
import pytest

from core.chat import latest_soft_switch, model_messages
from core.errors import PromptError


def test_earlier_assistant_turns_lose_their_reasoning():
    history = [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple.", "reasoning": "I like apples."},
        {"role": "user", "content": "Another one?"},
    ]
    assert model_messages(history) == [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
        {"role": "user", "content": "Another one?"},
    ]


def test_inline_think_blocks_in_assistant_content_are_dropped():
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>\nsecret\n</think>\n\nApple."},
        {"role": "assistant", "content": "reasoning only in prompt\n</think>\n\nPear."},
        {"role": "user", "content": "next"},
    ]
    contents = [m["content"] for m in model_messages(history)]
    assert contents == ["q", "Apple.", "Pear.", "next"]


def test_gradio_shaped_history_thoughts_and_parts():
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Name a fruit."}]},
        {"role": "assistant", "content": "I like apples.", "metadata": {"id": "reasoning:r1", "title": "Thought for 1 s",
                                                                     "status": "done"}},
        {"role": "assistant", "content": [{"type": "text", "text": "Apple."}], "metadata": None},
        {"role": "user", "content": "Another one? /no_think"},
    ]
    assert model_messages(history) == [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
        {"role": "user", "content": "Another one? /no_think"},
    ]


def test_soft_switches_pass_through_and_the_latest_wins():
    history = [{"role": "user", "content": "a /no_think"}, {"role": "assistant", "content": "x"},
               {"role": "user", "content": "b /think"}]
    assert model_messages(history)[-1]["content"] == "b /think"
    assert latest_soft_switch(history) == "/think"
    assert latest_soft_switch(history[:2]) == "/no_think"
    assert latest_soft_switch([{"role": "user", "content": "no switch"}]) is None


def test_system_prompt_goes_first_once():
    msgs = model_messages([{"role": "user", "content": "hi"}], system_prompt="Be brief.")
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    msgs = model_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}], "Other")
    assert [m["content"] for m in msgs] == ["S", "hi"]


@pytest.mark.parametrize("history,message", [
    ([], "must end with a user message"),
    ([{"role": "user", "content": "   "}], "empty"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "must end with a user message"),
    ([{"role": "function", "content": "x"}, {"role": "user", "content": "hi"}], "unknown role"),
    ([{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}], "must follow an assistant message"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]},
      {"role": "tool", "content": "x"}], "needs a function name"),
    (["just a string"], "not an object"),
])
def test_bad_histories_are_refused_clearly(history, message):
    with pytest.raises(PromptError, match=message):
        model_messages(history)
