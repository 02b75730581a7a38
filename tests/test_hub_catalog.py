"""Model resolution (catalog, repo ids, local folders) and Hub downloads without a network."""
from __future__ import annotations

import json

import pytest

from backends import hub
from core.catalog import inspect_local, load_catalog, resolve_model
from core.errors import ModelLoadError, ModelNotFound


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_catalog_has_the_cards_models_and_the_tiny_ones():
    by_name = {spec.name: spec for spec in load_catalog()}
    assert by_name["qwen3-4b-fp8"].source == "Qwen/Qwen3-4B-FP8" and by_name["qwen3-4b-fp8"].quantized
    assert by_name["qwen3-4b"].format == "bf16" and not by_name["qwen3-4b"].quantized
    assert by_name["tiny-bf16"].is_tiny and by_name["tiny-fp8"].format == "fp8"
    assert len(by_name) == len(load_catalog()), "names are unique"


@pytest.mark.parametrize("ref,backend,fmt", [
    ("qwen3-4b-fp8", "transformers", "fp8"),
    ("Qwen/Qwen3-4B-FP8", "transformers", "fp8"),  # a catalog source is found too
    ("someone/Qwen3-8B-GPTQ-Int8", "gptq", "gptq-int8"),
    ("someone/Qwen3-8B-AWQ", "gptq", "awq"),
    ("someone/Qwen3-8B-GGUF", "llama.cpp", "gguf"),
    ("someone/my-qwen3", "transformers", "bf16"),
])
def test_backend_is_inferred_from_what_the_model_is(ref, backend, fmt):
    spec = resolve_model(ref)
    assert (spec.backend, spec.format) == (backend, fmt)
    assert resolve_model(ref, backend="remote").backend == "remote"


def test_local_folders_are_inspected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}}))
    assert inspect_local(tmp_path) == ("gptq", "gptq-int4")
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8"}}))
    assert resolve_model(str(tmp_path)).format == "fp8"
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="corrupt"):
        resolve_model(str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)).backend == "llama.cpp"
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ModelNotFound, match="not a GGUF"):
        resolve_model(str(other))


def test_uncached_repo_without_network_is_a_clear_error(offline_empty_cache):
    spec = resolve_model("Qwen/Qwen3-4B-FP8")
    assert hub.available_offline(spec) is False
    calls = []
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache and the Hub cannot be reached"):
        hub.fetch_model(spec, progress=lambda f, m: calls.append((f, m)))
    assert hub.available_offline(resolve_model("tiny-bf16")) is True


def test_download_progress_reaches_the_callback():
    seen = []
    bar_class = hub._tqdm_reporting(lambda f, m: seen.append((f, m)), "Downloading x/y")
    bar = bar_class(total=4, desc="Fetching 4 files", disable=False)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert [f for f, _ in seen] == [0.25, 0.5, 0.75, 1.0]
    assert seen[-1][1] == "Downloading x/y: Fetching 4 files"
