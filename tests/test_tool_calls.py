"""Table-driven tests of the streaming Hermes tool-call parser (core.tool_calls).

Like vLLM's parser tests: every case runs one-shot, streamed in every possible 2-way split, and
character by character; all must give the same events (same ids too, from a counting id maker).
"""
import ast
import dataclasses
import itertools
import json
import re
import sys
from pathlib import Path

import pytest

from core.events import AnswerDelta, ReasoningDelta
from core.reasoning import ReasoningParser
from core.tool_calls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    UNTERMINATED,
    ParsedReply,
    ToolCall,
    ToolCallError,
    ToolCallParser,
    parse_reply,
    parse_tool_calls,
    split_unclosed_reasoning,
)


def block(body: str) -> str:
    """A block as the official template writes it."""
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"timezone": "Asia/Shanghai"}}'
W = ("call", "get_weather", {"city": "Paris"})
T = ("call", "get_time", {"timezone": "Asia/Shanghai"})
NESTED = {"filter": {"range": {"min": 1, "max": [2, {"deep": None, "ok": True}]}, "tags": []}, "n": -1.5e3}


def err(fragment: str, name: str | None = None):
    return ("error", fragment, name)


# (case, answer text as streamed, expected answer, expected blocks in order)
CASES = [
    ("plain answer", "The answer is 5.", "The answer is 5.", []),
    ("plain text with < and html", "3 < 4 and <b>bold</b> <tool>", "3 < 4 and <b>bold</b> <tool>", []),
    ("empty", "", "", []),
    ("whitespace only", "\n\n  ", "", []),
    ("one call", block(WEATHER), "", [W]),
    ("two parallel calls", block(WEATHER) + "\n" + block(TIME), "", [W, T]),
    ("parallel calls, no whitespace", block(WEATHER) + block(TIME), "", [W, T]),
    ("compact block", '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>', "", [W]),
    ("spaces around the JSON", f"<tool_call>  {WEATHER}  </tool_call>", "", [W]),
    ("CRLF line breaks", f"<tool_call>\r\n{WEATHER}\r\n</tool_call>", "", [W]),
    ("text before calls", "Let me check both.\n\n" + block(WEATHER) + "\n" + block(TIME), "Let me check both.", [W, T]),
    ("text after a call", block(WEATHER) + "\n\nI will wait for the result.", "I will wait for the result.", [W]),
    ("text around a call: whitespace after it separates", "A\n" + block(WEATHER) + "\n\nB", "A\n\nB", [W]),
    ("text around a call: else whitespace before it", "A " + block(WEATHER) + "B", "A B", [W]),
    ("text between calls", block(WEATHER) + "\nand also\n" + block(TIME) + "\n", "and also", [W, T]),
    ("inner whitespace of the answer is kept", "Line one.\n\n  Line two. " + block(TIME), "Line one.\n\n  Line two.", [T]),
    # malformed blocks
    ("malformed JSON", block('{"name": "get_weather", "arguments": {city: "Paris"}}'), "", [err("not valid JSON")]),
    ("malformed then valid", block('{"name": get_weather}') + "\n" + block(TIME), "", [err("not valid JSON"), T]),
    ("single-quoted (Python) strings are not repaired", block("{'name': 'f', 'arguments': {}}"), "", [err("not valid JSON")]),
    ("two missing braces are not repaired", block('{"name": "f", "arguments": {"a": 1'), "", [err("not valid JSON")]),
    ("unbalanced brackets are not repaired", block('{"name": "f", "arguments": {"a": [1, 2}}'), "", [err("not valid JSON")]),
    ("NaN is not JSON", block('{"name": "f", "arguments": {"x": NaN}}'), "", [err("NaN is not valid JSON")]),
    ("code fence is not repaired", block('```json\n' + WEATHER + '\n```'), "", [err("not valid JSON")]),
    ("missing name", block('{"arguments": {"city": "Paris"}}'), "", [err('has no "name"')]),
    ("name not a string", block('{"name": 3, "arguments": {}}'), "", [err('"name" must be a string, got a number')]),
    ("empty name", block('{"name": " ", "arguments": {}}'), "", [err('"name" is empty')]),
    ("not an object", block("[1, 2]"), "", [err("must be a JSON object, got a list")]),
    ("empty block", "<tool_call>\n</tool_call>", "", [err("the tool call is empty")]),
    ("arguments a list", block('{"name": "f", "arguments": [1]}'), "", [err("must be a JSON object, got a list", "f")]),
    ("arguments null", block('{"name": "f", "arguments": null}'), "", [err("must be a JSON object, got null", "f")]),
    ("arguments a non-JSON string", block('{"name": "f", "arguments": "city=Paris"}'), "", [err("a string that is not a JSON object", "f")]),
    ("arguments a string holding a list", block('{"name": "f", "arguments": "[1, 2]"}'), "", [err("must be a JSON object, got a list", "f")]),
    ("other keys but no arguments", block('{"name": "f", "parameters": {"a": 1}}'), "", [err("has no \"arguments\" (it has 'parameters')", "f")]),
    # tolerated slips
    ("slip: no arguments at all", block('{"name": "get_time"}'), "", [("call", "get_time", {})]),
    ("slip: trailing commas", block('{"name": "f", "arguments": {"a": 1, "b": [1, 2,],},}'), "", [("call", "f", {"a": 1, "b": [1, 2]})]),
    ("slip: trailing comma before a line break", block('{"name": "f", "arguments": {"a": 1,\n}}'), "", [("call", "f", {"a": 1})]),
    ("slip: one missing final brace", block('{"name": "get_weather", "arguments": {"city": "Paris"}'), "", [W]),
    ("slip: arguments as a JSON string", block('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'), "", [W]),
    ("slip: Python True/False/None", block('{"name": "f", "arguments": {"a": True, "b": False, "c": None, "d": "True, None"}}'),
     "", [("call", "f", {"a": True, "b": False, "c": None, "d": "True, None"})]),
    ("slips together", block('{"name": "f", "arguments": {"a": [True,],}'), "", [("call", "f", {"a": [True]})]),
    # end of the stream
    ("unterminated block at the end", "Checking.\n" + TOOL_CALL_OPEN + "\n" + WEATHER, "Checking.", [err(UNTERMINATED)]),
    ("unterminated after a complete call", block(TIME) + "\n<tool_call>\n{\"name\": \"get_wea", "", [T, err(UNTERMINATED)]),
    ("ends right after the tag", "Checking.\n<tool_call>", "Checking.", [err(UNTERMINATED)]),
    ("ends after the tag and a line break", "<tool_call>\n", "", [err(UNTERMINATED)]),
    ("partial tag at the end is text", "It ends with <tool_ca", "It ends with <tool_ca", []),
    # the tag mentioned in text
    ("tag mentioned in text", "Use the <tool_call> tag to call a tool.", "Use the <tool_call> tag to call a tool.", []),
    ("both tags mentioned", "Wrap it in <tool_call></tool_call> tags.", "Wrap it in <tool_call></tool_call> tags.", []),
    ("stray closing tag is text", "Done </tool_call> here.", "Done </tool_call> here.", []),
    ("mention, then a real call", "I'll use <tool_call> tags:\n" + block(WEATHER), "I'll use <tool_call> tags:", [W]),
    ("tag at the very start mentioned", "<tool_call> is the tag.", "<tool_call> is the tag.", []),
    # JSON contents
    ("unicode arguments", block('{"name": "translate", "arguments": {"text": "日本語 🚀", "to": "français", "e": "\\u00e9"}}'),
     "", [("call", "translate", {"text": "日本語 🚀", "to": "français", "e": "é"})]),
    ("unicode answer text", "Voilà: ünïcödé 🚀 " + block(TIME), "Voilà: ünïcödé 🚀", [T]),
    ("nested JSON", block(json.dumps({"name": "search", "arguments": NESTED})), "", [("call", "search", NESTED)]),
    ("closing tag inside a JSON string", block('{"name": "write", "arguments": {"text": "a </tool_call> b \\"</tool_call>\\" c"}}'),
     "", [("call", "write", {"text": 'a </tool_call> b "</tool_call>" c'})]),
    ("opening tag inside a JSON string", block('{"name": "echo", "arguments": {"text": "<tool_call>\\n{"}}'),
     "", [("call", "echo", {"text": "<tool_call>\n{"})]),
    ("backslash at the end of a JSON string", block('{"name": "path", "arguments": {"p": "C:\\\\"}}'), "", [("call", "path", {"p": "C:\\"})]),
    ("unbalanced quote: the block ends at the literal closing tag",
     block('{"name": "f", "arguments": {"x": "oops}}') + "\nAfter.", "After.", [err("not valid JSON")]),
    ("unbalanced quote, then a valid call",
     block('{"name": "f", "arguments": {"x": "oops}}') + "\n" + block(TIME), "", [err("not valid JSON"), T]),
    ("text, error, call, text", "First.\n" + block("{oops}") + "\n" + block(WEATHER) + "\nLast.", "First.\nLast.", [err("not valid JSON"), W]),
]


def counting_ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def every_chunking(text):
    """The whole text, every way of cutting it in two, and one character at a time."""
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    yield list(text)


def merged(events):
    """Events with consecutive answer deltas joined (chunking only changes how text is cut)."""
    out = []
    for event in events:
        assert not isinstance(event, AnswerDelta) or event.text, "no empty deltas"
        if out and isinstance(event, AnswerDelta) and isinstance(out[-1], AnswerDelta):
            out[-1] = AnswerDelta(out[-1].text + event.text)
        else:
            out.append(event)
    return out


def stream(chunks):
    parser = ToolCallParser(new_id=counting_ids())
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish()
    return parser, events


def check_blocks(calls, errors, expected):
    blocks = sorted([*calls, *errors], key=lambda b: b.index)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert len(blocks) == len(expected), blocks
    for got, want in zip(blocks, expected):
        if want[0] == "call":
            assert isinstance(got, ToolCall), got
            assert (got.name, got.arguments) == want[1:]
            assert got.raw.startswith(TOOL_CALL_OPEN) and got.raw.endswith(TOOL_CALL_CLOSE)
        else:
            assert isinstance(got, ToolCallError), got
            assert want[1] in got.message and got.name == want[2]
            assert "\n" not in got.message, "one-line messages"
            assert got.raw.startswith(TOOL_CALL_OPEN)


@pytest.mark.parametrize("name,text,answer,expected", CASES, ids=[c[0] for c in CASES])
def test_streamed_every_way_equals_one_shot(name, text, answer, expected):
    one_shot = parse_tool_calls(text, new_id=counting_ids())
    assert one_shot[0] == answer
    check_blocks(one_shot[1], one_shot[2], expected)
    _, reference = stream([text])
    for chunks in every_chunking(text):
        parser, events = stream(chunks)
        assert merged(events) == merged(reference), chunks
        assert (parser.answer, parser.calls, parser.errors) == one_shot, chunks
        assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == answer


def test_blocks_and_text_come_out_in_order():
    text = "First.\n" + block(WEATHER) + "\nthen\n" + block("{bad") + "\n" + block(TIME)
    _, events = stream([text])
    kinds = [type(e).__name__ + (f":{e.index}" if not isinstance(e, AnswerDelta) else "") for e in events]
    assert kinds == ["AnswerDelta", "ToolCall:0", "AnswerDelta", "ToolCallError:1", "ToolCall:2"]
    assert [e.id for e in events if not isinstance(e, AnswerDelta)] == ["call_0", "call_1", "call_2"]


# -- streaming promptness ----------------------------------------------------------------------


def test_answer_text_streams_at_once_and_only_a_possible_tag_is_held():
    parser = ToolCallParser(new_id=counting_ids())
    assert parser.feed("Hello wor") == [AnswerDelta("Hello wor")]
    assert parser.feed("ld <tool") == [AnswerDelta("ld")]  # " <tool" may start a tag
    assert parser.feed("_call>") == []
    assert parser.feed('\n{"name": "f", ') == [] and parser.in_tool_call
    assert parser.feed('"arguments": {}}\n</tool_') == []
    call = ToolCall("call_0", "f", {}, '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', 0)
    assert parser.feed("call>\nNext") == [call, AnswerDelta("\nNext")]
    assert not parser.in_tool_call
    assert parser.finish() == []
    assert parser.answer == "Hello world\nNext"


def test_text_that_only_looked_like_a_tag_is_released_as_soon_as_it_differs():
    parser = ToolCallParser()
    assert parser.feed("a <tool_ca") == [AnswerDelta("a")]
    assert parser.feed("x") == [AnswerDelta(" <tool_cax")]
    assert parser.feed(" and <tool_call>") == [AnswerDelta(" and")]
    assert parser.feed(" ") == []  # still undecided: a block may follow the tag
    assert parser.feed("tag") == [AnswerDelta(" <tool_call> tag")]
    assert parser.finish() == [] and parser.calls == [] and parser.errors == []


def test_finish_releases_a_partial_tag_and_reports_an_open_block():
    parser = ToolCallParser(new_id=counting_ids())
    assert parser.feed("see <tool_cal") == [AnswerDelta("see")]
    assert parser.finish() == [AnswerDelta(" <tool_cal")]
    parser = ToolCallParser(new_id=counting_ids())
    parser.feed('<tool_call>\n{"name": "f", "arguments": {}}')  # complete JSON, no closing tag
    [error] = parser.finish()
    assert error == ToolCallError('<tool_call>\n{"name": "f", "arguments": {}}', UNTERMINATED, 0, "call_0")
    with pytest.raises(ValueError):
        parser.feed("more")
    assert parser.finish() == []


# -- reasoning: only text outside <think>...</think> holds calls --------------------------------

DRAFT = block('{"name": "delete_all", "arguments": {}}')

# (case, raw output, starts_in_reasoning, reasoning, answer, expected blocks)
THINK_CASES = [
    ("call drafted inside reasoning", f"<think>\nMaybe {DRAFT} no.\n</think>\n\nThe answer.", False,
     f"Maybe {DRAFT} no.", "The answer.", []),
    ("drafted call, closed reasoning, empty answer", f"<think>\n{DRAFT}\n</think>", True, DRAFT, "", []),
    ("drafted call, opening tag in the prompt", f"Draft {DRAFT}\n</think>\n\nOK", True, f"Draft {DRAFT}", "OK", []),
    ("drafted call, then a real one", f"<think>\n{DRAFT}\n</think>\n\n" + block(WEATHER), False, DRAFT, "", [W]),
    ("call after reasoning", "<think>\nI need the weather.\n</think>\n\nLet me check.\n" + block(WEATHER), True,
     "I need the weather.", "Let me check.", [W]),
    ("thinking off", "<think>\n\n</think>\n\n" + block(WEATHER), True, "", "", [W]),
    ("no reasoning block at all", block(WEATHER) + "\n" + block(TIME), False, "", "", [W, T]),
    # the habit: reasoning never closed, complete calls in it
    ("unclosed reasoning with a call", "<think>\nI need the weather.\n" + block(WEATHER), False, "I need the weather.", "", [W]),
    ("unclosed, no opening tag, two calls", "I need both.\n" + block(WEATHER) + "\n" + block(TIME), True, "I need both.", "", [W, T]),
    ("unclosed, calls only", "<think>\n" + block(WEATHER), True, "", "", [W]),
    ("unclosed, text after the call", "<think>\nr\n" + block(WEATHER) + "\nwaiting", False, "r", "waiting", [W]),
    ("unclosed, a mention before the call", "<think>\nUse the <tool_call> tag.\n" + block(WEATHER), False,
     "Use the <tool_call> tag.", "", [W]),
    ("unclosed, bad call", "<think>\nr\n" + block("{oops"), False, "r", "", [err("not valid JSON")]),
    ("unclosed, complete then cut", "<think>\nr\n" + block(TIME) + "\n<tool_call>\n{\"na", False, "r", "", [T, err(UNTERMINATED)]),
    # reasoning that never closed and holds no complete block stays reasoning
    ("unclosed, only a mention", "<think>\nUse the <tool_call> tag", False, "Use the <tool_call> tag", "", []),
    ("unclosed, cut inside a block", "<think>\nr\n<tool_call>\n{\"name\": \"f\"", False, 'r\n<tool_call>\n{"name": "f"', "", []),
    ("unclosed, no calls", "<think>\nStill thinking", True, "Still thinking", "", []),
]


def pipeline(chunks, starts_in_reasoning):
    """What a backend's stream goes through: reasoning split, tool calls, then the habit."""
    new_id = counting_ids()
    thinking = ReasoningParser(starts_in_reasoning)
    tools = ToolCallParser(new_id)
    events = []
    for chunk in chunks:
        events += tools.feed_events(thinking.feed(chunk))
    events += tools.feed_events(thinking.finalize()) + tools.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    calls = [e for e in events if isinstance(e, ToolCall)]
    errors = [e for e in events if isinstance(e, ToolCallError)]
    assert (reasoning, answer, calls, errors) == (thinking.reasoning, tools.answer, tools.calls, tools.errors)
    if thinking.in_reasoning:
        assert not (answer or calls or errors), "nothing but reasoning while reasoning never closed"
        reasoning, answer, calls, errors = split_unclosed_reasoning(reasoning, new_id)
    return ParsedReply(reasoning, answer, tuple(calls), tuple(errors))


@pytest.mark.parametrize("name,output,starts,reasoning,answer,expected", THINK_CASES, ids=[c[0] for c in THINK_CASES])
def test_calls_only_outside_reasoning(name, output, starts, reasoning, answer, expected):
    reply = parse_reply(output, starts, new_id=counting_ids())
    assert (reply.reasoning, reply.answer) == (reasoning, answer)
    check_blocks(reply.calls, reply.errors, expected)
    for chunks in every_chunking(output):
        assert pipeline(chunks, starts) == reply, chunks


def test_reasoning_deltas_pass_through_unparsed():
    parser = ToolCallParser()
    event = ReasoningDelta(block(WEATHER))
    assert parser.feed_event(event) == [event]
    assert parser.feed_events([ReasoningDelta("a"), ReasoningDelta("b"), AnswerDelta("c")]) == [ReasoningDelta("ab"), AnswerDelta("c")]
    assert parser.finish() == [] and parser.calls == []


def test_split_unclosed_reasoning_directly():
    assert split_unclosed_reasoning("Thinking. " + block(WEATHER), counting_ids()) == (
        "Thinking.", "", [ToolCall("call_0", "get_weather", {"city": "Paris"}, block(WEATHER), 0)], [])
    assert split_unclosed_reasoning("just thinking <tool_call>") == ("just thinking <tool_call>", "", [], [])
    assert split_unclosed_reasoning("") == ("", "", [], [])


# -- the call types -----------------------------------------------------------------------------


def test_to_openai_shape():
    _, [call], _ = parse_tool_calls(block('{"name": "translate", "arguments": {"text": "日本 é", "n": [1, {"a": null}]}}'))
    shaped = call.to_openai()
    assert shaped == {"id": call.id, "type": "function",
                      "function": {"name": "translate", "arguments": '{"text": "日本 é", "n": [1, {"a": null}]}'}}
    assert json.loads(shaped["function"]["arguments"]) == call.arguments


def test_ids_are_random_call_ids():
    _, calls, errors = parse_tool_calls(block(WEATHER) + block(TIME) + block("{bad"))
    ids = [b.id for b in [*calls, *errors]]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == 3


def test_calls_and_errors_are_frozen():
    _, [call], [error] = parse_tool_calls(block(WEATHER) + block("{bad"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.message = "other"


def test_module_is_library_free():
    tree = ast.parse(Path(__file__).resolve().parent.parent.joinpath("core", "tool_calls.py").read_text(encoding="utf-8"))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    for module in modules:
        top = module.split(".")[0]
        assert top == "core" or top in sys.stdlib_module_names or top == "__future__", module
