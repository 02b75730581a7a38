"""Distribution drift from a reference: the maths (core.drift), each library's log-probs, the CLI."""
from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.drift import TokenLogprobs, Window, drift, kld_top_k, percentile, plan_windows, vocabulary_problem
from core.errors import PlaygroundError, PromptError
from core.speed_bound import MemorySplit, WeightProfile, bound_tokens_per_s, memory_split, share_of_bound
from core.texts import TEXTS
from playground import Playground
from playground.drift import DriftEntry, score_drift

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
ln = math.log


# -- the maths -------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, other, expected", [
    ([ln(.5), ln(.3)], [ln(.5), ln(.3)], 0.0),  # identical, tail .2 on both
    ([ln(.5), ln(.5)], [ln(.5), ln(.5)], 0.0),  # identical, no tail
    # .5 ln(.5/.25) + tail .5 ln(.5/.75)
    ([ln(.5)], [ln(.25)], .5 * ln(2) + .5 * ln(2 / 3)),
    # no tail: .5 ln(.5/.9) + .5 ln(.5/.1)
    ([ln(.5), ln(.5)], [ln(.9), ln(.1)], .5 * ln(.5 / .9) + .5 * ln(5)),
    # the reference has all its mass on its top-k; Q's tail is ignored (P puts nothing there)
    ([ln(1.0)], [ln(.5)], ln(2)),
])
def test_kld_over_the_top_k_and_the_tail(ref, other, expected):
    assert kld_top_k(ref, other) == pytest.approx(expected, abs=1e-12)


def test_kld_where_the_entry_has_no_tail_left_is_large_not_infinite():
    assert 30 < kld_top_k([ln(.5)], [ln(1.0)]) < 40  # .5 ln .5 + .5 ln(.5 / 1e-30)


@pytest.mark.parametrize("values, q, expected", [
    ([5.0], 99, 5.0), ([0.0, 1.0, 2.0, 3.0, 4.0], 99, 3.96), ([0.0, 1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([3.0, 1.0, 2.0], 100, 3.0), ([3.0, 1.0, 2.0], 0, 1.0),
])
def test_percentile_as_numpy_computes_it(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize("n, context, stride, expected", [
    (10, 512, 256, [Window(0, 10, 1)]),
    (10, 4, 2, [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]),
    (10, 4, 4, [Window(0, 4, 1), Window(4, 8, 4), Window(8, 10, 8)]),
    (2, 4, 2, [Window(0, 2, 1)]),
])
def test_windows_score_every_target_once(n, context, stride, expected):
    windows = plan_windows(n, context, stride)
    assert windows == expected
    targets = [t for w in windows for t in range(w.first_target, w.end)]
    assert targets == list(range(1, n))


@pytest.mark.parametrize("n, context, stride", [(1, 4, 2), (10, 1, 1), (10, 4, 5), (10, 4, 0)])
def test_windows_refuse_what_cannot_be_scored(n, context, stride):
    with pytest.raises(PromptError):
        plan_windows(n, context, stride)


def test_drift_summary_by_hand():
    ref = [TokenLogprobs(ln(.5), (1, 2), (ln(.5), ln(.5))), TokenLogprobs(ln(.25), (3, 4), (ln(.75), ln(.25)))]
    same = drift(ref, ref, context=4, stride=2, top_k=2)
    assert (same.kld_mean, same.kld_p99, same.kld_max, same.same_top_token) == (0.0, 0.0, 0.0, 1.0)
    assert same.perplexity == pytest.approx(math.exp((ln(2) + ln(4)) / 2)) and same.tokens == 2
    # position 1: Q = (.9, .1) over P = (.5, .5), same top; position 2: Q = (.2, .75) over P = (.75, .25),
    # Q's top token is token 4, the reference's 3
    other = [TokenLogprobs(ln(.5), (1,), (ln(.9),), (ln(.9), ln(.1))),
             TokenLogprobs(ln(.75), (4,), (ln(.75),), (ln(.2), ln(.75)))]
    got = drift(ref, other, context=4, stride=2, top_k=2)
    first = .5 * ln(.5 / .9) + .5 * ln(.5 / .1)  # 0.5108
    second = .75 * ln(.75 / .2) + .25 * ln(.25 / .75)  # 0.7167
    assert got.kld_mean == pytest.approx((first + second) / 2) and got.kld_max == pytest.approx(second)
    assert got.kld_p99 == pytest.approx(first + .99 * (second - first)) and got.same_top_token == 0.5
    assert got.perplexity == pytest.approx(math.exp((ln(2) + ln(4 / 3)) / 2))
    # a tie: the entry's top token is another, but the reference's is as likely for it
    tied = [other[0], TokenLogprobs(ln(.25), (4,), (ln(.5),), (ln(.5), ln(.5)))]
    assert drift(ref, tied, context=4, stride=2, top_k=2).same_top_token == 1.0


def test_vocabulary_check():
    assert vocabulary_problem(["a", "b"], ["a", "b"], "x", "ref") is None
    assert vocabulary_problem(["a", "b"], ["a", "b", "[PAD2]"], "x", "ref") is None  # padding rows
    problem = vocabulary_problem(["a", "b"], ["a", "c"], "x", "ref")
    assert "x does not share the vocabulary of ref" in problem and "token 1" in problem


# -- the backends on the tiny models ---------------------------------------------------------

MODELS = ["tiny-bf16", "tiny-bf16", "tiny-fp8", "tiny-gguf-f16", "tiny-gguf-q8_0", "tiny-gptq-int4",
          "tiny-gguf-q4_k_m"]


@pytest.fixture(scope="module")
def measured():
    results = score_drift(Playground(), [DriftEntry(m) for m in MODELS], TEXTS["encyclopedia"])
    assert not [r for r in results if isinstance(r, Exception)], results
    return dict(zip(["itself", *MODELS[1:]], results))


def test_an_entry_against_itself_has_no_drift(measured):
    for name in ("itself", "tiny-bf16"):  # the reference's own row, and the same model loaded again
        got = measured[name]
        assert got.kld_mean == pytest.approx(0, abs=1e-9) and got.kld_max == pytest.approx(0, abs=1e-9)
        assert got.same_top_token == 1.0 and got.tokens == 193


def test_eight_bit_twins_drift_less_than_four_bit_ones(measured):
    """Measured on the encyclopedia text (193 tokens, one window, top 64 of a 521-token vocabulary):

    ==================  ========  =======  =======  ========
    entry               KLD mean  KLD p99  KLD max  same top
    ==================  ========  =======  =======  ========
    tiny-gguf-f16       0.00048   0.0051   0.016    100 %
    tiny-gguf-q8_0      0.0018    0.019    0.047    99.5 %
    tiny-fp8            0.012     0.121    0.166    94.8 %
    tiny-gguf-q4_k_m    0.056     0.627    1.389    90.7 %
    tiny-gptq-int4      0.116     1.143    1.641    86.0 %
    ==================  ========  =======  =======  ========
    """
    kld = {name: result.kld_mean for name, result in measured.items()}
    order = ["tiny-gguf-f16", "tiny-gguf-q8_0", "tiny-fp8", "tiny-gguf-q4_k_m", "tiny-gptq-int4"]
    assert sorted(order, key=kld.get) == order, kld
    for eight in ("tiny-gguf-f16", "tiny-gguf-q8_0", "tiny-fp8"):
        for four in ("tiny-gguf-q4_k_m", "tiny-gptq-int4"):
            assert measured[eight].kld_p99 < measured[four].kld_p99
            assert measured[eight].same_top_token > measured[four].same_top_token
    assert measured["tiny-gguf-f16"].same_top_token == 1.0


def test_drift_perplexity_is_the_backends_own(measured):
    """One window covering the text: the same figure as ``perplexity()`` (transformers' loss)."""
    from playground import open_model

    backend = open_model("tiny-bf16")
    try:
        assert measured["itself"].perplexity == pytest.approx(backend.perplexity(TEXTS["encyclopedia"]).perplexity,
                                                               rel=1e-4)
    finally:
        backend.unload()


def test_windows_on_both_libraries():
    """Windows of 64 tokens every 32: every target is scored once, on transformers and llama.cpp alike."""
    models = ["tiny-bf16", "tiny-bf16", "tiny-gguf-f16"]
    results = score_drift(Playground(), [DriftEntry(m) for m in models], TEXTS["encyclopedia"], context=64, stride=32)
    ref, again, gguf = results
    assert all(r.tokens == 193 and (r.context, r.stride) == (64, 32) for r in results)
    assert again.kld_max == pytest.approx(0, abs=1e-9) and again.same_top_token == 1.0
    assert gguf.kld_mean < 0.005 and gguf.same_top_token > 0.98
    assert gguf.perplexity == pytest.approx(ref.perplexity, rel=0.05)


class _FakeBackend:
    """A model with a vocabulary of its own (no tiny model has another)."""

    context_window = 512

    def __init__(self, vocabulary: list[str]) -> None:
        self._vocabulary = vocabulary

    def plain_tokens(self, text: str) -> list[int]:
        return [0, 1, 0, 1]

    def vocabulary(self) -> list[str]:
        return self._vocabulary

    def token_logprobs(self, tokens, windows, top_k, picks=None):
        return [TokenLogprobs(ln(.5), (0, 1), (ln(.5), ln(.5)), (ln(.5), ln(.5)) if picks else ())
                for w in windows for _ in range(w.first_target, w.end)]


def test_entries_with_another_vocabulary_are_refused():
    vocabularies = iter([["a", "b"], ["a", "b"], ["a", "x"]])

    @contextlib.contextmanager
    def acquire(spec, options, progress):
        yield _FakeBackend(next(vocabularies))

    results = score_drift(Playground(), [DriftEntry("tiny-bf16"), DriftEntry("tiny-fp8"), DriftEntry("tiny-moe")],
                          "text", acquire=acquire)
    assert results[0].kld_mean == results[1].kld_mean == 0.0 and results[1].tokens == 3
    assert isinstance(results[2], PlaygroundError)
    assert "tiny-moe does not share the vocabulary of tiny-bf16" in str(results[2])


def test_the_remote_backend_says_not_available():
    from backends.remote_backend import RemoteBackend

    with pytest.raises(PlaygroundError, match="not available on the remote backend"):
        RemoteBackend().token_logprobs([1, 2], plan_windows(2), 4)


# -- the command line ------------------------------------------------------------------------

def test_compare_command_scores_drift(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXTS["encyclopedia"], encoding="utf-8")
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16", "tiny-gguf-q8_0",
                             "--prompt", "What is 2+3?", "--seed", "0", "--score", str(text), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    ref, q8 = data["table"]
    for row in (ref, q8):
        assert {"kld_mean", "kld_p99", "kld_max", "same_top_token", "perplexity", "tokens", "memory",
                "bandwidth_bound_tokens_per_s", "share_of_bound"} <= row.keys()
        assert row["tokens"] == 193 and set(row["memory"]) == {"weights", "kv", "other"}
        assert row["bandwidth_bound_tokens_per_s"] > 0 and 0 < row["share_of_bound"] <= 1.2
    assert ref["kld_mean"] == 0.0 and ref["same_top_token"] == 1.0
    assert 0 < q8["kld_mean"] < 0.01 and q8["same_top_token"] > 0.98
    assert data["entries"][1]["drift"]["context"] == 512 and data["entries"][1]["drift"]["top_k"] == 64


def test_compare_command_scores_only_in_markdown():
    """Scoring only (no prompt): the drift columns, without the reply's figures."""
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16", "tiny-fp8",
                             "--score", "encyclopedia", "--score-context", "128", "--score-stride", "64",
                             "--markdown"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| KLD mean | KLD p99 | KLD max | same top token | tokens scored | perplexity |" in result.stdout
    assert "windows of 128 tokens, stride 64" in result.stdout and "bound tokens/s" not in result.stdout


def test_compare_command_needs_something_to_do():
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs --prompt, --score or --perplexity" in result.stderr


# -- memory like for like and the bandwidth bound ---------------------------------------------

@pytest.mark.parametrize("profile, active", [
    (WeightProfile(1000, 10), 1000),  # dense: every weight
    (WeightProfile(1000, 10, expert_bytes=800, num_experts=8, experts_per_token=2), 400),  # 200 + 800 x 2/8
    (WeightProfile(1000, 10, expert_bytes=0, num_experts=8, experts_per_token=2), 1000),  # experts unknown
])
def test_active_weights(profile, active):
    assert profile.active_bytes == active


@pytest.mark.parametrize("gain, expected", [
    (5000, MemorySplit(1000, 100, 3900)), (1050, MemorySplit(1000, 100, 0)), (None, MemorySplit(1000, 100, None)),
])
def test_memory_split_adds_up_to_the_process_gain(gain, expected):
    assert memory_split(WeightProfile(1000, 10), 10, gain) == expected


def test_bound_and_share():
    assert bound_tokens_per_s(1e9, 900, 100) == 1e6  # 1 GB/s over 1 kB per token
    assert bound_tokens_per_s(0.0, 900, 100) is None and bound_tokens_per_s(1e9, 0, 0) is None
    assert share_of_bound(5e5, 1e6) == 0.5 and share_of_bound(None, 1e6) is None and share_of_bound(1.0, None) is None


def test_bandwidth_is_measured_once_and_cached(tmp_path, monkeypatch):
    from backends import bandwidth

    monkeypatch.setenv("QWEN3_PLAYGROUND_CACHE", str(tmp_path))
    first = bandwidth.memory_bandwidth("cpu")
    assert first.bytes_per_s > 1e8 and not first.cached  # any machine copies faster than 100 MB/s
    assert json.loads((tmp_path / "bandwidth.json").read_text())["cpu"] == first.bytes_per_s
    again = bandwidth.memory_bandwidth("cpu")
    assert again.cached and again.bytes_per_s == first.bytes_per_s


def test_memory_columns_and_the_bound_on_the_tiny_models():
    """Each entry loads alone, in turn: its memory columns add up to what the process gained; the
    bound is positive and the measured speed a share of it (tiny models: a fraction of a percent
    to a few percent, Python's per-token overhead dominates; MoE: routed experts only)."""
    from core.presets import get_preset
    from playground import load_fresh
    from playground.compare import EntrySpec, collect, new_comparison, run_comparison

    settings = get_preset("thinking").settings.with_updates(seed=0, max_new_tokens=64)
    entries = [EntrySpec("tiny-bf16"), EntrySpec("tiny-moe"), EntrySpec("tiny-gguf-q8_0")]
    comparison = new_comparison(entries, "What is 2+3?", settings, True)
    histories = comparison.start_turn("What is 2+3?")
    collect(comparison, run_comparison(Playground(), entries, histories, settings, True, acquire=load_fresh))
    for entry, row in zip(comparison.entries, comparison.rows()):
        assert entry.error is None, entry.error
        memory, gain = row["memory"], entry.memory["process_gain"]
        assert memory["weights"] > 0 and memory["kv"] > 0 and memory["other"] is not None
        if memory["other"] > 0:  # clipped at 0 when a library maps its weights lazily
            assert memory["weights"] + memory["kv"] + memory["other"] == gain
        stats = entry.stats
        assert memory["kv"] == entry.memory["profile"]["kv_bytes_per_token"] * (
            stats["prompt_tokens"] + stats["completion_tokens"])
        assert row["bandwidth_bound_tokens_per_s"] > 0 and 0 < row["share_of_bound"] <= 1.2
    moe = comparison.entries[1].memory["profile"]
    assert moe["num_experts"] > moe["experts_per_token"] > 0
    assert 0 < moe["expert_bytes"] < moe["weight_bytes"] and moe["active_bytes"] < moe["weight_bytes"]
    markdown = comparison.to_markdown()
    assert "| weights MiB | KV MiB | other MiB | bound tokens/s | share of bound |" in markdown
    assert "Bound: memory bandwidth" in markdown
    from ui.compare_view import results_table

    headers = list(results_table(comparison).columns)
    assert headers[headers.index("memory MiB") + 1:headers.index("memory MiB") + 6] == [
        "weights MiB", "KV MiB", "other MiB", "bound tokens/s", "share of bound"]


def test_an_export_with_the_new_figures_round_trips_and_a_forged_one_only_loses_its_cells():
    from core.compare import Comparison, EntryResult
    from core.compare_io import ComparisonFileError, parse_comparison

    profile = WeightProfile(1000, 10).to_dict()
    entry = EntryResult("1. a", "a", stats={"prompt_tokens": 5, "completion_tokens": 5, "tokens_per_s": 10.0},
                        drift=drift([TokenLogprobs(ln(.5), (1,), (ln(.5),))] * 2,
                                    [TokenLogprobs(ln(.5), (1,), (ln(.5),))] * 2, context=4, stride=2,
                                    top_k=1).to_dict(),
                        memory={"profile": profile, "process_gain": 5000, "bandwidth_bytes_per_s": 1.1e6,
                                "bandwidth_device": "cpu"})
    comparison = Comparison("p", {}, False, entries=[entry])
    row = parse_comparison(comparison.to_json(), 4).rows()[0]
    assert row["memory"] == {"weights": 1000, "kv": 100, "other": 3900} and row["kld_mean"] == 0.0
    assert row["bandwidth_bound_tokens_per_s"] == pytest.approx(1.1e6 / (1000 + 10 * 7))  # mean context 5 + 5 // 2
    forged = json.loads(comparison.to_json())
    forged["entries"][0]["memory"]["profile"] = {"weight_bytes": "lots"}
    assert parse_comparison(json.dumps(forged), 4).rows()[0]["memory"] is None
    forged["entries"][0]["memory"] = "lots"
    with pytest.raises(ComparisonFileError, match="memory"):
        parse_comparison(json.dumps(forged), 4)
