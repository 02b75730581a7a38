"""Distribution drift of a quantized entry from a reference, on a text (library-free maths).

For every position of the text, each entry's next-token distribution Q is compared with the
reference's P (the first entry's), as ``llama-perplexity --kl-divergence`` does: mean KL(P || Q),
its 99th percentile and maximum, the share of positions whose most likely token is the same, and
the perplexity of the text's own tokens.

**Bounded memory: a top-k of the reference, not full distributions.** The reference keeps, per
position, its ``top_k`` (default :data:`TOP_K`) most likely tokens with their log-probabilities;
the rest of the vocabulary is one bin, the *tail*, with mass ``1 - sum(top-k)``. Each other entry
reports its log-probabilities at those same tokens, and its own tail is what is left. KL is then
computed over the k + 1 bins. Why this and not streaming full distributions to a temp file: a
position costs ``k`` ids and floats (about 1 KB at k = 64) instead of a 151,936-float row (600 KB;
a 10k-token text would need 6 GB of disk), no temp file has to be managed, and the result is
nearly exact: merging bins can only lower KL (log-sum inequality), so the figure is a lower bound
that misses only how the tail's own shape changed; with k = 64 the reference's tail mass is
typically well under 1 % for a 0.6B+ model. Same-top-token and perplexity use each entry's full
distribution (the backend computes them) and are exact.

**Windows.** A long text is scored like the usual perplexity tools: windows of ``context`` tokens
starting every ``stride`` tokens; each target token is scored once, in the first window that
reaches it, so that every target after the first window sees at least ``context - stride``
tokens of context (:func:`plan_windows`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from core.errors import PromptError

TOP_K = 64  # reference tokens kept per position (see the module docstring)
CONTEXT = 512  # tokens per window
STRIDE = 256  # a new window every STRIDE tokens: later targets see >= CONTEXT - STRIDE tokens


@dataclass(frozen=True)
class Window:
    """``tokens[begin:end]`` go into the model; the targets ``first_target .. end - 1`` are scored
    (a target ``t`` is predicted by the logits of position ``t - 1``)."""

    begin: int
    end: int
    first_target: int


def plan_windows(n_tokens: int, context: int = CONTEXT, stride: int = STRIDE) -> list[Window]:
    """Windows covering targets 1 .. n_tokens - 1 exactly once (token 0 has no prediction)."""
    if n_tokens < 2:
        raise PromptError("the text to score needs at least two tokens")
    if context < 2 or not 1 <= stride <= context:
        raise PromptError(f"windows need a context of at least 2 tokens and a stride from 1 to the context "
                          f"(got context {context}, stride {stride})")
    windows: list[Window] = []
    begin, scored_to = 0, 1
    while True:
        end = min(begin + context, n_tokens)
        windows.append(Window(begin, end, scored_to))
        if end == n_tokens:
            return windows
        scored_to, begin = end, begin + stride


@dataclass(frozen=True)
class TokenLogprobs:
    """One position of a scored text, from one model's next-token distribution."""

    target: float  # log p(the text's actual next token)
    top_ids: tuple[int, ...]  # this model's most likely next tokens, most likely first
    top_logprobs: tuple[float, ...]
    picked: tuple[float, ...] = ()  # log p at the ids asked for (the reference's top_ids), in their order


@dataclass(frozen=True)
class Drift:
    """An entry against the reference over the same tokens (the reference against itself: 0, 1)."""

    kld_mean: float
    kld_p99: float
    kld_max: float
    same_top_token: float  # share of positions where the reference's top token is the entry's (ties count)
    perplexity: float  # of this entry, on the scored tokens
    tokens: int  # positions scored
    context: int
    stride: int
    top_k: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def kld_top_k(ref_logprobs: Sequence[float], logprobs: Sequence[float]) -> float:
    """KL(P || Q) over the reference's top-k tokens plus one tail bin (a lower bound of the full KL).

    ``ref_logprobs``: log P of the reference's top-k tokens; ``logprobs``: log Q of the same tokens.
    """
    kld = 0.0
    for p_log, q_log in zip(ref_logprobs, logprobs, strict=True):
        kld += math.exp(p_log) * (p_log - q_log)
    p_tail = _tail(ref_logprobs)
    if p_tail > 0.0:
        q_tail = max(_tail(logprobs), 1e-30)  # Q put (nearly) all its mass on P's top-k
        kld += p_tail * math.log(p_tail / q_tail)
    return max(kld, 0.0)  # rounding can leave -1e-17 for identical distributions


def _tail(logprobs: Sequence[float]) -> float:
    """The mass outside the given tokens (clipped: rounding can take the sum past 1)."""
    return max(0.0, 1.0 - math.fsum(math.exp(x) for x in logprobs))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the two nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def drift(reference: Sequence[TokenLogprobs], entry: Sequence[TokenLogprobs], *, context: int, stride: int,
          top_k: int) -> Drift:
    """``entry``'s drift from ``reference``, position by position; ``entry[i].picked`` holds its
    log-probabilities at ``reference[i].top_ids`` (for the reference itself, empty: its own top)."""
    if len(reference) != len(entry) or not reference:
        raise ValueError(f"the reference scored {len(reference)} positions and the entry {len(entry)}")
    klds: list[float] = []
    same = 0
    nll = 0.0
    for ref, own in zip(reference, entry):
        klds.append(kld_top_k(ref.top_logprobs, own.picked or own.top_logprobs[:len(ref.top_ids)]))
        same += _same_top(ref, own)
        nll -= own.target
    n = len(reference)
    return Drift(kld_mean=math.fsum(klds) / n, kld_p99=percentile(klds, 99), kld_max=max(klds),
                 same_top_token=same / n, perplexity=math.exp(nll / n), tokens=n, context=context,
                 stride=stride, top_k=top_k)


def _same_top(ref: TokenLogprobs, own: TokenLogprobs) -> bool:
    """The reference's most likely token is (one of) the entry's most likely: with ties (common in
    bf16 logits) the libraries' top-k may pick either of two equal tokens."""
    if own.top_ids and own.top_ids[0] == ref.top_ids[0]:
        return True
    return bool(own.picked and own.top_logprobs) and own.picked[0] >= own.top_logprobs[0]


def vocabulary_problem(reference: Sequence[str], other: Sequence[str], name: str, reference_name: str) -> str | None:
    """Why ``other``'s vocabulary (token texts by id) cannot be compared with the reference's, or None.

    Every id both have must be the same token; one may be longer (padding rows a converter adds
    to the embedding matrix, never predicted in practice).
    """
    for token_id, (a, b) in enumerate(zip(reference, other)):
        if a != b:
            return (f"{name} does not share the vocabulary of {reference_name}: token {token_id} is {b!r} "
                    f"there and {a!r} in the reference; drift compares the same tokenizer only")
    return None
