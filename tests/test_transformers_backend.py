"""The transformers backend on the tiny bf16 and FP8 models: the script, switches, Stop, YaRN, errors."""
from __future__ import annotations

import shutil
import threading

import pytest

from conftest import ask

from backends.base import LoadOptions
from playground import open_model
from backends.registry import create_backend
from core.catalog import resolve_model
from core.errors import ModelLoadError, ModelNotFound, PlaygroundError, PromptError
from core.events import AnswerDelta, GenerationStats, ReasoningDelta, Reply
from core.presets import get_preset
from core.settings import GenerationSettings
from tinymodels import CASES, LEAKED_HISTORY_CASE
from tinymodels.script import case as scripted

FINISHING = [c for c in CASES if c.ends]


@pytest.fixture(scope="module", params=["tiny-bf16", "tiny-fp8"])
def backend(request):
    loaded = open_model(request.param)
    yield loaded
    loaded.unload()


def chat(backend, messages, thinking, settings=None, **kwargs) -> Reply:
    settings = settings or get_preset("thinking" if thinking else "non-thinking").settings.with_updates(seed=0)
    reply = Reply()
    for event in ask(backend, messages, settings, thinking=thinking, **kwargs):
        reply.add(event)
    return reply


@pytest.mark.parametrize("case", FINISHING, ids=[c.name for c in FINISHING])
def test_follows_the_script_with_the_cards_presets(backend, case):
    reply = chat(backend, case.messages, case.enable_thinking)
    assert (reply.reasoning, reply.answer) == (case.reasoning, case.answer)
    assert reply.stats.finish_reason == "stop"


def test_thinking_streams_reasoning_before_the_answer(backend):
    events = list(ask(backend, scripted("think").messages, get_preset("thinking").settings, thinking=True))
    kinds = [type(e) for e in events]
    assert kinds[0] is ReasoningDelta and kinds[-1] is GenerationStats
    assert kinds.index(AnswerDelta) > max(i for i, k in enumerate(kinds) if k is ReasoningDelta)
    stats = events[-1]
    assert stats.prompt_tokens > 5 and stats.completion_tokens > 10
    assert stats.ttft_s > 0 and stats.tokens_per_s > 0 and stats.total_s >= stats.ttft_s


def test_hard_switch_off_gives_no_reasoning_and_soft_switch_an_empty_block(backend):
    off = chat(backend, scripted("think").messages, thinking=False)
    assert off.reasoning == "" and off.answer == "The answer is 5."
    soft = chat(backend, [{"role": "user", "content": "What is 2+3? /no_think"}], thinking=True)
    assert soft.reasoning == "" and soft.answer == "The answer is 5."


def test_quantized_presets_with_presence_penalty_keep_the_script(backend):
    for name, thinking in (("thinking-quantized", True), ("non-thinking-quantized", False)):
        settings = get_preset(name).settings.with_updates(seed=1)
        reply = chat(backend, scripted("another").messages, thinking, settings)
        assert reply.answer == "The sky is blue."


def test_multi_turn_sends_earlier_turns_without_their_reasoning(backend):
    first = chat(backend, [{"role": "user", "content": "Name a fruit."}], thinking=True)
    assert (first.reasoning, first.answer) == ("I like apples.", "Apple.")
    # The history as a UI keeps it: the reasoning stored with the answer, or inline in the content.
    for assistant in ({"role": "assistant", "content": first.answer, "reasoning": first.reasoning},
                      {"role": "assistant", "content": f"<think>\n{first.reasoning}\n</think>\n\n{first.answer}"}):
        history = [{"role": "user", "content": "Name a fruit."}, assistant, {"role": "user", "content": "Another one?"}]
        assert chat(backend, history, thinking=True).answer == "Banana."
    # Had the reasoning reached the model, it would have answered differently (the script says so):
    assert LEAKED_HISTORY_CASE.answer != "Banana."


def test_enable_thinking_reaches_the_chat_template(backend):
    messages = [{"role": "user", "content": "hi /think"}]
    assert backend.render_prompt(messages, thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = backend.render_prompt(messages, thinking=True)
    assert on.endswith("<|im_start|>assistant\n") and "hi /think<|im_end|>" in on


def test_greedy_non_thinking_follows_the_script(backend):
    reply = chat(backend, scripted("another_no_think_hard").messages, False, GenerationSettings(temperature=0))
    assert reply.answer == "The sky is blue."
    with pytest.raises(PlaygroundError, match="greedy decoding"):
        chat(backend, scripted("think").messages, True, GenerationSettings(temperature=0))


def _generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]


def test_stop_event_ends_the_generate_loop(backend):
    settings = get_preset("non-thinking").settings.with_updates(max_new_tokens=30000, seed=0)
    stop = threading.Event()
    reply = Reply()
    for event in ask(backend, scripted("endless").messages, settings, thinking=False, stop=stop):
        reply.add(event)
        if len(reply.answer) > 30:
            stop.set()
    assert reply.answer.startswith("la la la")
    assert reply.stats.finish_reason == "cancelled"
    assert reply.stats.completion_tokens < 200  # stopped within a few tokens, not at 30000
    assert not _generate_threads()


def test_closing_the_stream_stops_the_computation(backend):
    settings = get_preset("non-thinking").settings.with_updates(max_new_tokens=30000)
    stream = ask(backend, scripted("endless").messages, settings, thinking=False)
    next(stream)
    stream.close()  # what a UI's Stop or a disconnecting client does: returns once generate has ended
    assert not _generate_threads()
    assert chat(backend, scripted("think").messages, True).answer == "The answer is 5."  # still usable


def test_max_new_tokens_cuts_the_reply(backend):
    settings = get_preset("thinking").settings.with_updates(max_new_tokens=4, seed=0)
    reply = chat(backend, scripted("think").messages, True, settings)
    assert reply.stats.completion_tokens == 4 and reply.stats.finish_reason == "length"
    assert reply.reasoning and not reply.answer  # cut off inside the reasoning: kept as reasoning


def test_empty_and_over_long_prompts_are_refused_before_compute(backend):
    with pytest.raises(PromptError, match="empty"):
        chat(backend, [{"role": "user", "content": "  "}], True)
    with pytest.raises(PromptError, match="longer than the context window of 32,768"):
        chat(backend, [{"role": "user", "content": "la " * 33000}], False)


def test_describe(backend):
    info = backend.describe()
    assert info.backend == "transformers" and info.device == "cpu" and info.dtype == "bfloat16"
    assert info.context_window == 32768 and info.rope_scaling is None
    assert info.memory_bytes > 100_000
    if info.format == "fp8":
        assert info.quantization.startswith("fp8 e4m3 128x128") and "dequantized to bfloat16" in info.quantization
        assert any("dequantized" in note for note in info.notes)
    else:
        assert info.quantization is None and not info.notes


def test_fp8_and_bf16_agree_under_greedy_decoding():
    settings = GenerationSettings(temperature=0, max_new_tokens=40)
    bf16, fp8 = open_model("tiny-bf16"), open_model("tiny-fp8")
    for case in [c for c in CASES if not c.enable_thinking or c.think_block == "empty_think"]:
        a = chat(bf16, case.messages, False, settings)
        b = chat(fp8, case.messages, False, settings)
        assert a.answer == b.answer and a.stats.completion_tokens == b.stats.completion_tokens


def test_yarn_factor_2_changes_the_loaded_rope_and_keeps_rope_theta():
    yarn = open_model("tiny-bf16", options=LoadOptions(yarn_factor=2.0))
    info = yarn.describe()
    assert info.rope_scaling == {"rope_theta": 1000000.0, "rope_type": "yarn", "factor": 2.0,
                                 "original_max_position_embeddings": 32768}
    assert info.context_window == 65536 and info.details["rope_theta"] == 1000000.0
    rotary = yarn.model.model.rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling > 1.0  # YaRN's mscale is in effect
    plain = open_model("tiny-bf16")
    assert plain.model.model.rotary_emb.rope_type == "default"
    assert not (yarn.model.model.rotary_emb.inv_freq == plain.model.model.rotary_emb.inv_freq).all()


def test_missing_and_corrupt_models_give_clear_errors_and_keep_the_loaded_one(tmp_path):
    loaded = open_model("tiny-bf16")
    with pytest.raises(ModelNotFound, match="unknown model 'no-such-model'"):
        resolve_model("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        loaded.load(resolve_model(str(empty), "transformers"))
    broken = tmp_path / "broken"
    shutil.copytree(_tiny_dir(), broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="could not load"):
        loaded.load(resolve_model(str(broken)))
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json is corrupt"):
        create_backend("transformers").load(resolve_model(str(broken), "transformers"))
    # the failed loads left the previous model in place
    assert loaded.describe().model == "tiny-bf16"
    assert chat(loaded, scripted("think").messages, True).answer == "The answer is 5."


def _tiny_dir():
    import tinymodels

    return tinymodels.model_path("bf16")


def test_next_turn_reuses_the_previous_turns_kv_cache():
    fresh = open_model("tiny-bf16")
    first = chat(fresh, [{"role": "user", "content": "Name a fruit."}], thinking=True)
    assert first.stats.cached_prompt_tokens == 0
    history = [{"role": "user", "content": "Name a fruit."},
               {"role": "assistant", "content": first.answer, "reasoning": first.reasoning},
               {"role": "user", "content": "Another one?"}]
    second = chat(fresh, history, thinking=True)
    assert second.answer == "Banana."  # same reply as without the cache (the script)
    # the whole first prompt (not its reasoning, which the history drops) came from the cache
    first_prompt = len(fresh.encode_prompt(history[:1], thinking=True))
    assert second.stats.cached_prompt_tokens >= first_prompt - 1
    assert second.stats.prompt_tokens > second.stats.cached_prompt_tokens
    # another conversation on the same model shares at most the template's first tokens
    other = chat(fresh, scripted("another").messages, thinking=True)
    assert other.answer == "The sky is blue." and other.stats.cached_prompt_tokens < 5
