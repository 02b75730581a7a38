"""The presence penalty logits processor (OpenAI semantics), on hand-made tensors."""
import torch

from backends.hf_generation import PresencePenaltyLogitsProcessor


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
