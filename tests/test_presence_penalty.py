"""The presence penalty: the logits processor on hand-made tensors, then its effect on the logits
the sampler sees, per backend (transformers, GPTQ via gptqmodel, llama.cpp).

The tiny models' margins (10 logits and more) exceed any penalty the settings allow (at most 2),
so the penalty does not change their scripted replies: instead each model test captures, at
every generated token, the model's own logits and the logits the sampler gets, and checks that
they differ by exactly ``-penalty`` on every token generated so far and by nothing elsewhere
(the prompt never counts, however often a token appears in it). The request goes through the
playground (``Playground.request`` / ``Playground.chat``) as the UI's and the API's do, so a
penalty dropped anywhere between the settings and the sampler fails these tests.
"""
from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from backends.hf_generation import PresencePenaltyLogitsProcessor

pytestmark = pytest.mark.timeout(300)


def test_subtracts_once_per_generated_token_not_prompt_tokens():
    prompt_length = 2
    # prompt = tokens 0 and 1; generated so far: 3, 3, 3, 4
    input_ids = torch.tensor([[0, 1, 3, 3, 3, 4]])
    scores = torch.tensor([[1.0, 2.0, -1.0, 5.0, -3.0, 0.5]])
    out = PresencePenaltyLogitsProcessor(1.5, prompt_length)(input_ids, scores.clone())
    expected = torch.tensor([[1.0, 2.0, -1.0, 3.5, -4.5, 0.5]])  # 3 once (not 3x), 4 once; 0/1 untouched
    assert torch.equal(out, expected)


def test_is_additive_unlike_repetition_penalty():
    # repetition_penalty divides positive logits and multiplies negative ones; ours subtracts
    input_ids = torch.tensor([[7, 0, 1]])
    scores = torch.tensor([[4.0, -4.0, 0.0]])
    out = PresencePenaltyLogitsProcessor(2.0, 1)(input_ids, scores.clone())
    assert torch.equal(out, torch.tensor([[2.0, -6.0, 0.0]]))


def test_no_generated_tokens_or_zero_penalty_changes_nothing():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(PresencePenaltyLogitsProcessor(1.5, 3)(torch.tensor([[0, 1, 2]]), scores.clone()), scores)
    assert torch.equal(PresencePenaltyLogitsProcessor(0.0, 1)(torch.tensor([[0, 1, 2]]), scores.clone()), scores)


def test_batched_rows_are_penalised_independently():
    input_ids = torch.tensor([[9, 0], [9, 2]])
    scores = torch.zeros(2, 3)
    out = PresencePenaltyLogitsProcessor(1.0, 1)(input_ids, scores)
    assert torch.equal(out, torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))


# -- on the models: the logits the sampler sees ----------------------------------------------
@dataclass
class Step:
    """One generated token: the model's logits, the logits the sampler got, and the token drawn."""

    raw: np.ndarray
    seen: np.ndarray
    token: int | None = None


@dataclass
class Capture:
    prompt: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    n_vocab: int = 0


def capture_transformers(monkeypatch) -> Capture:
    """The transformers / GPTQ generation (``hf_generation.stream_generate``): a processor before
    the request's own ones records the model's logits, one right before the sampler (or, greedy,
    at the end) records what the sampler gets."""
    from backends import hf_generation

    captured = Capture()
    build = hf_generation.logits_processors

    def model_logits(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ids = input_ids[0].tolist()
        if not captured.prompt:
            captured.prompt = ids
        if captured.steps:  # the token drawn at the previous step is the last of the sequence now
            captured.steps[-1].token = ids[-1]
        captured.steps.append(Step(scores[0].float().numpy().copy(), np.empty(0)))
        return scores

    def sampler_logits(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        captured.steps[-1].seen = scores[0].float().numpy().copy()
        return scores

    def logits_processors(settings, prompt_tokens, device):
        processors = build(settings, prompt_tokens, device)
        at = next((i for i, p in enumerate(processors) if isinstance(p, hf_generation.SeededSampler)), len(processors))
        processors.insert(at, sampler_logits)
        processors.insert(0, model_logits)
        return processors

    monkeypatch.setattr(hf_generation, "logits_processors", logits_processors)
    return captured


def _token_logits(cur_p) -> np.ndarray:
    """The logits of a llama.cpp ``llama_token_data_array``, indexed by token id."""
    import llama_cpp

    array = cur_p.contents
    rows = (llama_cpp.llama_token_data * array.size).from_address(ctypes.addressof(array.data.contents))
    data = np.frombuffer(rows, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True))
    logits = np.full(array.size, np.nan, dtype=np.float32)
    logits[data["id"]] = data["logit"]
    return logits


def capture_llama_cpp(monkeypatch) -> Capture:
    """llama.cpp applies the penalty in its own sampler chain (the penalties sampler, fed only the
    tokens the chain accepts): the model's logits are read from the context as each token is
    sampled, a custom sampler right after the penalties one records what the rest of the chain
    (top-k... or greedy) gets, and ``sample`` the token drawn."""
    from llama_cpp import _internals

    captured = Capture()
    add_penalties, sample = _internals.LlamaSampler.add_penalties, _internals.LlamaSampler.sample

    def after(cur_p) -> None:
        captured.steps[-1].seen = _token_logits(cur_p)

    def capturing_add_penalties(self, n_vocab: int, *args, **kwargs):
        captured.n_vocab = n_vocab
        add_penalties(self, n_vocab, *args, **kwargs)
        self.add_custom(after)

    def capturing_sample(self, ctx, idx: int = -1) -> int:
        raw = np.ctypeslib.as_array(ctx.get_logits_ith(idx), shape=(captured.n_vocab,)).copy()
        captured.steps.append(Step(raw, np.empty(0)))
        token = sample(self, ctx, idx)
        captured.steps[-1].token = token
        return token

    monkeypatch.setattr(_internals.LlamaSampler, "add_penalties", capturing_add_penalties)
    monkeypatch.setattr(_internals.LlamaSampler, "sample", capturing_sample)
    return captured


BACKENDS = {"tiny-bf16": capture_transformers, "tiny-gptq-int4": capture_transformers,
            "tiny-gguf-q8_0": capture_llama_cpp}
PENALTY = 1.5  # the cards' advice for quantized models (and the loop retry's)


@dataclass
class Loaded:
    model: str
    playground: object


@pytest.fixture(scope="module", params=list(BACKENDS))
def loaded(request) -> Iterator[Loaded]:
    torch.set_num_threads(1)
    from backends.pool import ModelPool
    from playground import Playground

    playground = Playground(pool=ModelPool(max_models=1))
    playground.load(request.param)
    yield Loaded(request.param, playground)
    playground.pool.unload_all()


def generate(loaded: Loaded, monkeypatch, question: str, thinking: bool, settings: dict) -> tuple[Capture, str]:
    """One reply through the playground, as the UI and the API ask for it; (captured logits, answer)."""
    from core.events import AnswerDelta

    messages = [{"role": "user", "content": question}]
    captured = BACKENDS[loaded.model](monkeypatch)
    request = loaded.playground.request(messages, model=loaded.model, settings=settings, thinking=thinking,
                                        loop_guard=False)
    answer = "".join(event.text for event in loaded.playground.chat(request) if isinstance(event, AnswerDelta))
    monkeypatch.undo()
    if not captured.prompt:  # llama.cpp: the prompt as the backend tokenized it
        captured.prompt = loaded.playground.peek(loaded.model).encode_prompt(messages, thinking)
    return captured, answer


def check_penalty(captured: Capture, penalty: float) -> dict[str, float]:
    """At every step the sampler's logits are the model's minus ``penalty`` on each token generated
    so far (once, however often it came) and on nothing else: not on the prompt's tokens. Returns
    figures: steps, tokens penalised at the end, the largest penalised logit drop."""
    assert len(captured.steps) >= 2, "no logits reached the sampler"
    generated: list[int] = []
    prompt_only_checked = 0
    for t, step in enumerate(captured.steps):
        assert step.seen.shape == step.raw.shape, f"step {t}: the sampler's logits were not captured"
        expected = np.zeros_like(step.raw)
        expected[np.array(sorted(set(generated)), dtype=np.intp)] = -penalty
        change = step.seen - step.raw
        np.testing.assert_allclose(change, expected, atol=1e-3, err_msg=(
            f"step {t}: the sampler's logits are not the model's minus {penalty} on the {len(set(generated))} "
            f"tokens generated so far"))
        prompt_only = sorted(set(captured.prompt) - set(generated))
        assert prompt_only and np.all(change[np.array(prompt_only, dtype=np.intp)] == 0), f"step {t}: the prompt's tokens were penalised"
        prompt_only_checked += len(prompt_only)
        if step.token is not None:
            generated.append(step.token)
    return {"steps": len(captured.steps), "penalised": len(set(generated)), "prompt_only": prompt_only_checked}


def test_the_penalty_reaches_the_sampler_on_generated_tokens_only(loaded, monkeypatch):
    """The endless song, greedy, 90 tokens: "la" once at the start, then " la" over and over. Past
    64 tokens (llama.cpp's default penalty window) the first "la" still counts: every generated
    token does, as in the transformers backend."""
    from tinymodels.script import ENDLESS_Q

    settings = dict(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, presence_penalty=PENALTY, max_new_tokens=90,
                    seed=0)
    captured, answer = generate(loaded, monkeypatch, ENDLESS_Q, False, settings)
    assert answer.startswith("la la la")
    figures = check_penalty(captured, PENALTY)
    assert figures["steps"] >= 90
    first = captured.steps[0].token
    assert first not in [s.token for s in captured.steps[1:]], "the song's first token recurs: no window check"
    late = captured.steps[-1]
    assert late.seen[first] == pytest.approx(late.raw[first] - PENALTY, abs=1e-3)  # 89 tokens later, still penalised


def test_the_penalty_reaches_the_sampler_when_sampling(loaded, monkeypatch):
    """Thinking with the card's quantized preset (sampled, presence 1.5): the same rule, and the
    scripted reply (the tiny model's margins are larger than the penalty)."""
    from tinymodels.script import ADD_ANSWER, ADD_Q

    settings = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=PENALTY, max_new_tokens=64,
                    seed=3)
    captured, answer = generate(loaded, monkeypatch, ADD_Q, True, settings)
    assert answer == ADD_ANSWER
    check_penalty(captured, PENALTY)


def test_no_penalty_leaves_the_logits_alone(loaded, monkeypatch):
    """The capture itself: without a penalty the sampler sees the model's logits unchanged."""
    from tinymodels.script import ENDLESS_Q

    settings = dict(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, presence_penalty=0.0, max_new_tokens=20, seed=0)
    captured, _ = generate(loaded, monkeypatch, ENDLESS_Q, False, settings)
    check_penalty(captured, 0.0)
