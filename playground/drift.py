"""Distribution drift of every entry from the first one on a text (maths: ``core.drift``).

Entries load one at a time (``load_fresh``): the reference scores the text first and keeps its
top-k per position (``core.drift`` says why a top-k, and what it costs); every other entry then
reports its log-probabilities at those tokens. The text is tokenized once, by the reference, and
the same ids go to every entry, after checking that each entry's vocabulary is the reference's.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from backends.base import Backend
from core.drift import CONTEXT, STRIDE, TOP_K, Drift, TokenLogprobs, drift, plan_windows, vocabulary_problem
from core.errors import PlaygroundError
from core.request import LoadOptions
from playground.models import load_fresh
from playground.service import Playground


@dataclass(frozen=True)
class DriftEntry:
    model: str
    backend: str | None = None
    options: LoadOptions = LoadOptions()


def score_drift(playground: Playground, entries: Sequence[DriftEntry], text: str, *, context: int = CONTEXT,
                stride: int = STRIDE, top_k: int = TOP_K,
                acquire: Callable = load_fresh) -> list[Drift | PlaygroundError]:
    """Each entry's :class:`Drift` from ``entries[0]`` (itself: KLD 0), or why it has none.

    The windows' context is lowered to the smallest context window among the entries if needed.
    A reference that cannot score the text makes every entry fail with its reason.
    """
    return list(drift_steps(playground, entries, text, context=context, stride=stride, top_k=top_k,
                            acquire=acquire))


def drift_steps(playground: Playground, entries: Sequence[DriftEntry], text: str, *, context: int = CONTEXT,
                stride: int = STRIDE, top_k: int = TOP_K,
                acquire: Callable = load_fresh) -> Iterator[Drift | PlaygroundError]:
    """:func:`score_drift` one entry at a time: each outcome as soon as it is known; the next
    entry is acquired only when the next one is asked for (a UI shows its progress in between)."""
    results: list[Drift | PlaygroundError] = []
    reference: list[TokenLogprobs] = []
    ref_vocab: list[str] = []
    tokens: list[int] = []
    windows = []
    for index, entry in enumerate(entries):
        try:
            if index and not reference:
                raise PlaygroundError(f"the reference could not score the text: {results[0]}")
            with acquire(playground.resolve(entry.model, entry.backend), entry.options, None) as backend:
                if index == 0:
                    tokens = backend.plain_tokens(text)
                    context = min(context, _context_window(backend))
                    stride = min(stride, context)
                    windows = plan_windows(len(tokens), context, stride)
                    ref_vocab = backend.vocabulary()
                    reference = backend.token_logprobs(tokens, windows, top_k)
                    own = reference
                else:
                    problem = vocabulary_problem(ref_vocab, backend.vocabulary(), entry.model, entries[0].model)
                    if problem:
                        raise PlaygroundError(problem)
                    own = backend.token_logprobs(tokens, windows, 1, picks=[p.top_ids for p in reference])
            results.append(drift(reference, own, context=context, stride=stride, top_k=top_k))  # model released
        except PlaygroundError as exc:
            results.append(exc)
        yield results[-1]


def _context_window(backend: Backend) -> int:
    window = getattr(backend, "context_window", None)
    return int(window) if window else CONTEXT
