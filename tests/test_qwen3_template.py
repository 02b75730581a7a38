"""The project's fallback chat template renders exactly like Qwen3's official one.

``../shared/qwen3/chat_template.jinja`` is the template real Qwen3 checkpoints ship; the product
never reads it, only this test does. Every conversation shape below is rendered with both
templates, through transformers' own chat-template machinery (what the transformers and GPTQ
backends use) and through plain Jinja environments (what the tiny-model builder and
llama-cpp-python use), with and without a generation prompt and with each thinking switch, and
the texts must be identical. No model or tokenizer is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import jinja2.sandbox
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from core.qwen3_template import QWEN3_CHAT_TEMPLATE

# The chat template Qwen3 checkpoints ship (the chat_template of Qwen/Qwen3-0.6B, Apache-2.0),
# kept with the tests as reference data; the product never reads it.
OFFICIAL_PATH = Path(__file__).resolve().parent / "data" / "qwen3_official_chat_template.jinja"
# The team's shared copy, when this checkout sits beside it: the kept copy must be the same text.
SHARED_PATH = Path(__file__).resolve().parents[2] / "shared" / "qwen3" / "chat_template.jinja"


@pytest.fixture(scope="module")
def official() -> str:
    return OFFICIAL_PATH.read_text(encoding="utf-8")


def test_the_kept_reference_is_the_shared_one(official):
    if SHARED_PATH.is_file():
        assert SHARED_PATH.read_text(encoding="utf-8") == official


# --- building blocks ---------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city (°C).",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_current_time",
        "description": "Current time in an IANA timezone.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                       "required": ["timezone"]},
    },
}
TOOLS = [WEATHER, TIME]

SYSTEM = {"role": "system", "content": "You are a concise assistant."}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(content: str = "", *, reasoning: str | None = None, calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls is not None:
        message["tool_calls"] = calls
    return message


def call(name: str, arguments: dict | str, call_id: str = "call_0") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool(content: str | int, call_id: str = "call_0", name: str | None = None) -> dict:
    message = {"role": "tool", "tool_call_id": call_id, "content": content}
    if name:
        message["name"] = name
    return message


PARIS_CALL = call("get_weather", {"city": "Paris", "unit": "celsius"}, "call_1")
TOKYO_CALL = call("get_current_time", json.dumps({"timezone": "Asia/Tokyo"}), "call_2")
PARIS_RESULT = tool('{"temperature": 21, "sky": "clear"}', "call_1", "get_weather")
TOKYO_RESULT = tool("2025-05-01T09:30:00+09:00", "call_2", "get_current_time")

# --- the conversation shapes: (messages, tools) --------------------------------------------------

SHAPES: dict[str, tuple[list[dict], list[dict] | None]] = {
    "plain_single_turn": ([user("What is 2+3?")], None),
    "system_prompt": ([SYSTEM, user("What is 2+3?")], None),
    "multi_turn_plain_history": (
        [user("Name a fruit."), assistant("Apple."), user("Another one?")], None),
    # Earlier turns' reasoning is dropped, whether it sits in the content or in reasoning_content.
    "multi_turn_reasoning_in_history": (
        [SYSTEM,
         user("Name a fruit."), assistant("<think>\nI like apples.\n</think>\n\nApple."),
         user("Another one?"), assistant("Banana.", reasoning="They want one more fruit."),
         user("And a vegetable?"), assistant("<think>Veg.</think>Carrot.", reasoning=None),
         user("Thanks!")],
        None),
    "think_tags_without_open_tag": (
        [user("Hi"), assistant("reasoning only\n</think>\n\nHello!"), user("Bye")], None),
    "system_not_first": (
        [user("Hi"), assistant("Hello!"), {"role": "system", "content": "Now answer in French."},
         user("How are you?")],
        None),
    "tools_without_system": ([user("What's the weather in Paris?")], TOOLS),
    "tools_with_system": ([SYSTEM, user("What's the weather in Paris?")], TOOLS),
    "tools_offered_single_schema": ([user("What time is it in Tokyo?")], [TIME]),
    # One call, with text before it: a newline separates the text from the first <tool_call>.
    "one_tool_call_after_text": (
        [user("What's the weather in Paris?"),
         assistant("Let me check.", calls=[PARIS_CALL])],
        TOOLS),
    # Empty content with calls: no newline before the first <tool_call>; arguments as a dict and as
    # a JSON string.
    "two_parallel_calls_empty_content": (
        [user("Weather in Paris and time in Tokyo?"),
         assistant("", calls=[PARIS_CALL, TOKYO_CALL])],
        TOOLS),
    "tool_call_without_function_wrapper": (
        [user("Time in Tokyo?"),
         assistant("", calls=[{"name": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}])],
        [TIME]),
    # Consecutive tool results become one user turn of <tool_response> pieces.
    "tool_results_merged": (
        [SYSTEM, user("Weather in Paris and time in Tokyo?"),
         assistant("", calls=[PARIS_CALL, TOKYO_CALL]), PARIS_RESULT, TOKYO_RESULT],
        TOOLS),
    "single_tool_result": (
        [user("What's the weather in Paris?"), assistant("", calls=[PARIS_CALL]), PARIS_RESULT],
        TOOLS),
    # The tool loop: reasoning of the turns after the last real user message is kept (from
    # reasoning_content or from think tags in the content); the turn before it loses its reasoning.
    "tool_loop_keeps_reasoning": (
        [SYSTEM,
         user("Name a city."), assistant("Paris.", reasoning="Any city will do."),
         user("Weather there, then the time in Tokyo?"),
         assistant("", reasoning="\nI need the weather first.\n", calls=[PARIS_CALL]), PARIS_RESULT,
         assistant("<think>\nNow the time.\n</think>\n\nChecking the time.", calls=[TOKYO_CALL]),
         TOKYO_RESULT],
        TOOLS),
    "tool_loop_final_answer": (
        [user("Weather in Paris?"),
         assistant("", reasoning="Call the tool.", calls=[PARIS_CALL]), PARIS_RESULT,
         assistant("It is 21 °C and clear in Paris.", reasoning="The tool says 21 and clear.")],
        TOOLS),
    # A loop turn without reasoning (not the last message) is written without a think block.
    "tool_loop_turn_without_reasoning": (
        [user("Weather in Paris?"), assistant("", calls=[PARIS_CALL]), PARIS_RESULT,
         assistant("", calls=[TOKYO_CALL]), TOKYO_RESULT],
        TOOLS),
    # A user message that is itself a tool response does not count as the last real query.
    "user_message_holding_tool_response": (
        [user("Weather in Paris?"), assistant("", reasoning="Call it.", calls=[PARIS_CALL]),
         user("<tool_response>\n{\"temperature\": 21}\n</tool_response>")],
        TOOLS),
    # Ending with an assistant message: it gets the (possibly empty) think block.
    "ends_with_assistant": ([user("What is 2+3?"), assistant("The answer is 5.")], None),
    "ends_with_assistant_reasoning": (
        [SYSTEM, user("What is 2+3?"),
         assistant("<think>\nTwo plus three makes five.\n</think>\n\nThe answer is 5.")],
        None),
    "ends_with_assistant_reasoning_content": (
        [user("What is 2+3?"), assistant("\n\nThe answer is 5.", reasoning="Two plus three.")], None),
    "non_ascii_and_markup_in_content": (
        [user("Ünïcødé 🙂 <b>bold</b> & \"quotes\""),
         assistant("", calls=[call("get_weather", {"city": "Zürich", "note": "<&>"})]),
         tool("Sonnig, 18 °C"), tool("<error>timeout</error>")],
        TOOLS),
    # Written as the engine prints it (no string concatenation on results).
    "tool_result_not_a_string": (
        [user("Temperature in Paris?"), assistant("", calls=[PARIS_CALL]), tool(21, "call_1")],
        TOOLS),
}

# (add_generation_prompt, enable_thinking); None: the variable is not passed at all.
SWITCHES = [(True, None), (True, True), (True, False), (False, None), (False, False)]


def test_enough_shapes_are_covered():
    assert len(SHAPES) >= 10


def render_transformers(template: str, messages, tools, add_generation_prompt, enable_thinking) -> str:
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    rendered, _ = render_jinja_template(
        conversations=[messages], tools=tools, chat_template=template,
        add_generation_prompt=add_generation_prompt, **kwargs)
    return rendered[0]


def render_plain_jinja(env: jinja2.Environment):
    def render(template: str, messages, tools, add_generation_prompt, enable_thinking) -> str:
        kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        return env.from_string(template).render(
            messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs)
    return render


RENDERERS = {
    "transformers": render_transformers,
    # the tiny-model builder, and tests that render the template themselves
    "jinja2": render_plain_jinja(jinja2.Environment()),
    "jinja2_trim": render_plain_jinja(jinja2.Environment(trim_blocks=True, lstrip_blocks=True)),
    # llama-cpp-python's Jinja2ChatFormatter
    "jinja2_sandbox": render_plain_jinja(jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True)),
}


@pytest.mark.parametrize("engine", RENDERERS)
@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: f"gen={s[0]}-thinking={s[1]}")
@pytest.mark.parametrize("shape", SHAPES)
def test_renders_like_the_official_template(official, shape, switches, engine):
    messages, tools = SHAPES[shape]
    render = RENDERERS[engine]
    expected = render(official, messages, tools, *switches)
    assert render(QWEN3_CHAT_TEMPLATE, messages, tools, *switches) == expected


def test_rendering_does_not_touch_the_messages(official):
    messages, tools = SHAPES["tool_loop_keeps_reasoning"]
    before = json.dumps(messages, sort_keys=True)
    render_transformers(QWEN3_CHAT_TEMPLATE, messages, tools, True, False)
    assert json.dumps(messages, sort_keys=True) == before


# A few texts written out in full, so that the shapes above are known to exercise what they claim.

def test_tools_block_has_one_schema_per_line():
    text = render_transformers(QWEN3_CHAT_TEMPLATE, [SYSTEM, user("Hi")], TOOLS, True, None)
    assert text.startswith("<|im_start|>system\nYou are a concise assistant.\n\n# Tools\n\n")
    block = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in block.split("\n")] == TOOLS
    assert "°C" in block  # written as is, not \u-escaped


def test_calls_results_and_loop_reasoning():
    messages, tools = SHAPES["tool_loop_keeps_reasoning"]
    text = render_transformers(QWEN3_CHAT_TEMPLATE, messages, tools, True, False)
    assert "<|im_start|>assistant\nParis.<|im_end|>\n" in text  # before the last query: no reasoning
    assert ("<|im_start|>assistant\n<think>\nI need the weather first.\n</think>\n\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call><|im_end|>\n'
            in text)
    assert ("<|im_start|>assistant\n<think>\nNow the time.\n</think>\n\nChecking the time.\n<tool_call>\n"
            '{"name": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}\n</tool_call><|im_end|>\n'
            in text)
    assert text.endswith("<|im_start|>user\n<tool_response>\n2025-05-01T09:30:00+09:00\n</tool_response>"
                         "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    merged = render_transformers(QWEN3_CHAT_TEMPLATE, *SHAPES["tool_results_merged"], False, None)
    assert merged.endswith("<|im_start|>user\n<tool_response>\n" + PARIS_RESULT["content"] + "\n</tool_response>"
                           "\n<tool_response>\n" + TOKYO_RESULT["content"] + "\n</tool_response><|im_end|>\n")


def test_no_tools_shapes_stay_plain_chatml():
    """What the tiny models are trained on: ChatML turns, the think switch on the generation prompt."""
    messages = [SYSTEM, user("Name a fruit."), assistant("Apple."), user("Another one?")]
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    assert render_transformers(QWEN3_CHAT_TEMPLATE, messages, None, True, None) == chatml + "<|im_start|>assistant\n"
    assert render_transformers(QWEN3_CHAT_TEMPLATE, messages, None, True, False) == (
        chatml + "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_transformers(QWEN3_CHAT_TEMPLATE, messages, None, False, None) == chatml
