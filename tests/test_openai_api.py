"""The OpenAI-compatible API (``/v1``) served by the app itself, driven with the real ``openai``
client (sync and streaming) on the tiny models, the app started as a user starts it.

Disconnects are checked by what the server did, not by time: the app logs each reply's end
(``qwen3_playground.openai_api``: finish_reason, completion tokens) while the model's turn is
still held, so once the next request on the same local model has been answered, the line of
the one before it is in the log.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import openai
import pytest

from core.reasoning import EARLY_STOP_SENTENCE
from core.openai_api import ApiError, StopCutter, parse_chat_completion
from openai_loopback import DEFAULT_MODEL, LoopbackServer, scripted_reply, start_app
from tinymodels.script import (ADD_ANSWER, ADD_Q, ADD_REASONING, ENDLESS_Q, FRUIT_ANSWER, FRUIT_Q, FRUIT_REASONING,
                               WEATHER_CALL_REASONING, WEATHER_Q, WEATHER_REPORTS, WEATHER_TOOLS, case)

pytestmark = pytest.mark.timeout(300)

FORMATS = ["tiny-bf16", "tiny-fp8", "tiny-gptq-int4", "tiny-awq-int4", "tiny-moe", "tiny-gguf-q4_k_m"]
ANOTHER = case("multi_turn")  # "Name a fruit." -> "Apple.", then "Another one?" -> "Banana."
TOOL_ANSWER = case("tool_answer").answer  # "It is sunny and 21 degrees in Paris."


@pytest.fixture(scope="module")
def app():
    with start_app("--model", "tiny-bf16") as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key="EMPTY", max_retries=0, timeout=120)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stream_parts(stream) -> dict:
    """A streamed reply put together: reasoning, content, tool calls, finish_reason, usage."""
    out = {"reasoning": "", "content": "", "calls": {}, "finish_reason": None, "usage": None, "chunks": 0}
    for chunk in stream:
        out["chunks"] += 1
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            out["reasoning"] += getattr(delta, "reasoning_content", None) or ""
            out["content"] += delta.content or ""
            for call in delta.tool_calls or []:
                entry = out["calls"].setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                out["finish_reason"] = choice.finish_reason
    return out


# -- replies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", FORMATS)
def test_reasoning_and_answer_split_on_every_format(client, model):
    reply = client.chat.completions.create(model=model, messages=user(ADD_Q), max_tokens=200, seed=0)
    choice = reply.choices[0]
    assert choice.message.reasoning_content == ADD_REASONING
    assert choice.message.content == ADD_ANSWER
    assert choice.finish_reason == "stop"
    assert reply.model == model and reply.object == "chat.completion"
    usage = reply.usage
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens_details.reasoning_tokens < usage.completion_tokens

    streamed = stream_parts(client.chat.completions.create(
        model=model, messages=user(ADD_Q), max_tokens=200, seed=0, stream=True,
        stream_options={"include_usage": True}))
    assert (streamed["reasoning"], streamed["content"]) == (ADD_REASONING, ADD_ANSWER)
    assert streamed["finish_reason"] == "stop"
    assert streamed["usage"].completion_tokens == usage.completion_tokens
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
    assert streamed["usage"].completion_tokens_details.reasoning_tokens == reasoning_tokens


def test_hard_switch_through_chat_template_kwargs(client):
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0,
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = reply.choices[0].message
    assert message.content == ADD_ANSWER
    assert not getattr(message, "reasoning_content", None)
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


def test_soft_switch(client):
    streamed = stream_parts(client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q + " /no_think"),
                                                           max_tokens=200, seed=0, stream=True))
    assert streamed["reasoning"].strip() == "" and streamed["content"] == ADD_ANSWER
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q + " /think"), max_tokens=200, seed=0)
    assert reply.choices[0].message.reasoning_content == ADD_REASONING
    assert reply.choices[0].message.content == ADD_ANSWER


def test_multi_turn_history_drops_the_earlier_reasoning(client):
    messages = [*user(FRUIT_Q),
                {"role": "assistant", "content": FRUIT_ANSWER, "reasoning_content": FRUIT_REASONING},
                *user(ANOTHER.messages[-1]["content"])]
    reply = client.chat.completions.create(model="tiny-bf16", messages=messages, max_tokens=200, seed=0)
    # with the reasoning sent back, the tiny model says "Reasoning leaked into the history."
    assert reply.choices[0].message.content == ANOTHER.answer
    assert reply.choices[0].message.reasoning_content == ANOTHER.reasoning


def test_tool_call_then_the_result(client):
    messages = user(WEATHER_Q)
    reply = client.chat.completions.create(model="tiny-bf16", messages=messages, tools=WEATHER_TOOLS,
                                           max_tokens=300, seed=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning_content == WEATHER_CALL_REASONING
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")

    # the client runs the tool and sends the result back, with the assistant turn as it came
    follow = [*messages, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": WEATHER_REPORTS["Paris"]}]
    streamed = stream_parts(client.chat.completions.create(model="tiny-bf16", messages=follow, tools=WEATHER_TOOLS,
                                                           max_tokens=300, seed=0, stream=True))
    assert streamed["content"] == TOOL_ANSWER and streamed["finish_reason"] == "stop" and not streamed["calls"]

    # streamed, the call comes as a tool_calls delta
    streamed = stream_parts(client.chat.completions.create(model="tiny-bf16", messages=messages, tools=WEATHER_TOOLS,
                                                           max_tokens=300, seed=0, stream=True))
    assert streamed["finish_reason"] == "tool_calls"
    calls = [(c["name"], json.loads(c["arguments"])) for c in streamed["calls"].values()]
    assert calls == [("get_weather", {"city": "Paris"})]

    # tool_choice "none": the model is offered no tool
    reply = client.chat.completions.create(model="tiny-bf16", messages=messages, tools=WEATHER_TOOLS,
                                           tool_choice="none", max_tokens=300, seed=0)
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls


def test_thinking_budget_and_yarn_factor_extras(client):
    sky = case("another")  # "What color is the sky?"
    reply = client.chat.completions.create(model="tiny-bf16", messages=sky.messages, max_tokens=300, seed=7,
                                           extra_body={"thinking_budget": 8})
    message = reply.choices[0].message
    assert message.reasoning_content.endswith(EARLY_STOP_SENTENCE.strip()) and message.content
    assert message.reasoning_content != sky.reasoning
    # another YaRN factor is another pool entry: the same scripted reply from the model loaded with it
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0,
                                           extra_body={"yarn_factor": 2})
    assert reply.choices[0].message.content == ADD_ANSWER


def test_stop_string_cuts_the_answer(client):
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0,
                                           stop=["is 5"])
    assert reply.choices[0].message.content == "The answer "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].model_extra.get("stop_reason") == "is 5"


def test_models_lists_the_catalog(client):
    ids = [model.id for model in client.models.list()]
    assert set(FORMATS) <= set(ids)


def test_a_remote_model_through_the_playground():
    """The playground's remote backend behind its own API: the upstream server's reasoning and
    answer come back split the same way."""
    with LoopbackServer(chunks=4, reply_seconds=0.2) as server, \
            start_app("--model", f"remote:{DEFAULT_MODEL}", remote_url=server.url) as remote:
        client = openai.OpenAI(base_url=f"{remote.url}/v1", api_key="EMPTY", max_retries=0, timeout=60)
        streamed = stream_parts(client.chat.completions.create(model=f"remote:{DEFAULT_MODEL}", messages=user(ADD_Q),
                                                               stream=True, max_tokens=50))
        assert (streamed["reasoning"], streamed["content"]) == scripted_reply(ADD_Q)
        assert server.total == 1


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, param", [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"extra_body": {"top_k": 5000}}, "top_k"),
    ({"extra_body": {"chat_template_kwargs": {"enable_thinking": "false"}}}, "chat_template_kwargs.enable_thinking"),
    ({"temperature": 0}, "temperature"),  # greedy is refused in thinking mode
    ({"n": 2}, "n"),
    ({"tool_choice": "required", "tools": WEATHER_TOOLS}, "tool_choice"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"extra_body": {"yarn_factor": 9}}, "yarn_factor"),
])
def test_a_bad_parameter_is_a_400_naming_it(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), **extra)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["param"] == param, error
    assert (param if param != "yarn_factor" else "YaRN factor") in error["message"]  # in the request's words
    assert error["type"] == "invalid_request_error" and error["message"]


def test_bad_messages_and_unknown_models(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-bf16", messages=[{"role": "robot", "content": "hi"}])
    assert caught.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as caught:  # a conversation must end with the user (or tool results)
        client.chat.completions.create(model="tiny-bf16", messages=[{"role": "assistant", "content": "hi"}])
    assert caught.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model-anywhere", messages=user(ADD_Q))
    assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_found"


def test_request_parsing_without_a_server():
    params = parse_chat_completion({"model": "m", "messages": user("hi"), "max_tokens": 5, "top_k": -1,
                                    "messages_extra": 1, "stream": True, "stream_options": {"include_usage": True}})
    assert params.settings == {"max_new_tokens": 5, "top_k": 0} and params.include_usage
    with pytest.raises(ApiError) as caught:
        parse_chat_completion({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    assert caught.value.param == "messages[0].content[0]"
    cutter = StopCutter(("STOP",))
    assert cutter.feed("abcST") == ("ab", None)  # "cST" might start the stop string
    assert cutter.feed("OPx") == ("c", "STOP")


# -- a client that goes away -----------------------------------------------------------------
def test_disconnect_stops_the_generation(app, client):
    max_tokens = 30_000
    stream = client.chat.completions.create(model="tiny-bf16", messages=user(ENDLESS_Q), max_tokens=max_tokens,
                                            seed=0, stream=True,
                                            extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    seen, reply_id = "", None
    for chunk in stream:
        reply_id = chunk.id
        seen += "".join(choice.delta.content or "" for choice in chunk.choices)
        if seen.count("la") >= 5:
            break
    stream.close()  # the client goes away mid-reply
    assert "la la la" in seen

    # the next reply on the same model waits for that generation's end: once it is here, the
    # first one has ended, and the app logged how
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0)
    assert reply.choices[0].message.content == ADD_ANSWER
    log = app.log_tail(200_000)
    match = re.search(rf"{reply_id} tiny-bf16: finish_reason=(\w+) completion_tokens=(\d+)(.*)", log)
    assert match, log[-3000:]
    assert match.group(1) == "cancelled" and "client gone" in match.group(3)
    assert int(match.group(2)) < max_tokens


GONE = re.compile(r"(chatcmpl-\w+) tiny-bf16: finish_reason=(\w+) completion_tokens=(\d+) \(client gone\)")


def test_a_non_streaming_client_that_gives_up_stops_the_generation(app, client):
    max_tokens = 38_912
    before = GONE.findall(app.log_tail(1_000_000))
    with pytest.raises(openai.APITimeoutError):  # the client gives up long before 38,912 tokens
        client.with_options(timeout=3).chat.completions.create(
            model="tiny-bf16", messages=user(ENDLESS_Q), max_tokens=max_tokens, seed=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0)
    assert reply.choices[0].message.content == ADD_ANSWER  # so the endless one's turn has ended
    after = GONE.findall(app.log_tail(1_000_000))
    assert len(after) == len(before) + 1, app.log_tail()
    _, finish_reason, tokens = after[-1]
    assert finish_reason == "cancelled" and 0 < int(tokens) < max_tokens


# -- hosted mode -----------------------------------------------------------------------------
HOSTED = {"QWEN3_PLAYGROUND_HOSTED": "1", "QWEN3_PLAYGROUND_MODEL": "tiny-bf16",
          "QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS": "1000"}


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_hosted_api_is_off_unless_the_host_turns_it_on():
    with start_app(env=HOSTED) as hosted:
        status, body = _get(f"{hosted.url}/v1/models")
        assert status == 404 and body["error"]["code"] == "api_off"
        assert "QWEN3_PLAYGROUND_OPENAI_API=1" in body["error"]["message"]
        client = openai.OpenAI(base_url=f"{hosted.url}/v1", api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q))


def test_hosted_api_with_a_key_serves_the_hosts_model_only():
    env = {**HOSTED, "QWEN3_PLAYGROUND_OPENAI_API": "1", "QWEN3_PLAYGROUND_API_KEY": "s3cret",
           "QWEN3_PLAYGROUND_MAX_QUEUE": "1"}
    with start_app(env=env) as hosted:
        base = f"{hosted.url}/v1"
        assert _get(f"{base}/models")[0] == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=base, api_key="s3cret", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["tiny-bf16"]
        reply = client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q), max_tokens=200, seed=0)
        assert reply.choices[0].message.content == ADD_ANSWER
        with pytest.raises(openai.PermissionDeniedError) as caught:  # another catalog model: the host's choice
            client.chat.completions.create(model="tiny-fp8", messages=user(ADD_Q))
        assert "only the host of this playground can switch its model" in caught.value.body["message"]
        for outside in ("/etc/hostname", "someone/some-model"):  # not in the catalog: not even looked at
            with pytest.raises(openai.NotFoundError) as caught:
                client.chat.completions.create(model=outside, messages=user(ADD_Q))
            assert "only serves the models in its catalog" in caught.value.body["message"]
        with pytest.raises(openai.BadRequestError) as caught:  # the hosted size limits
            client.chat.completions.create(model="tiny-bf16", messages=user("x" * 1001))
        assert caught.value.body["param"] == "messages" and "at most 1,000" in caught.value.body["message"]

        # at most QWEN3_PLAYGROUND_MAX_QUEUE requests at once (last: the endless one ends after the app)
        no_thinking = {"chat_template_kwargs": {"enable_thinking": False}}
        stream = client.chat.completions.create(model="tiny-bf16", messages=user(ENDLESS_Q), max_tokens=30_000,
                                                stream=True, extra_body=no_thinking)
        next(iter(stream))  # it is being answered
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="tiny-bf16", messages=user(ADD_Q))
        assert caught.value.body["code"] == "rate_limit_exceeded"
        stream.close()
