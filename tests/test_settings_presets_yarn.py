"""Settings validation, the card's presets, user preset files, and YaRN arithmetic."""
import json

import pytest

from core.errors import InvalidSettings, PresetError
from core.presets import default_preset_name, get_preset, load_preset_file, load_presets
from core.settings import GREEDY_IN_THINKING_REASON, GenerationSettings
from core import yarn

CARD = {  # QWEN3.md, "Sampling"
    "thinking": dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=0.0),
    "non-thinking": dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, presence_penalty=0.0),
    "thinking-quantized": dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=1.5),
    "non-thinking-quantized": dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, presence_penalty=1.5),
}


@pytest.mark.parametrize("name", list(CARD))
def test_shipped_presets_hold_the_cards_values(name):
    preset = get_preset(name)
    for key, value in CARD[name].items():
        assert getattr(preset.settings, key) == value, key
    assert preset.settings.max_new_tokens == 32768
    assert preset.thinking == name.startswith("thinking")


def test_default_preset_per_mode():
    assert default_preset_name(True) == "thinking"
    assert default_preset_name(False) == "non-thinking"
    assert default_preset_name(True, quantized=True) == "thinking-quantized"


def test_a_user_drops_a_preset_file(tmp_path):
    (tmp_path / "creative.json").write_text(json.dumps({"mode": "non-thinking", "temperature": 1.0, "seed": 7}))
    presets = load_presets(tmp_path)
    assert presets["creative"].settings.temperature == 1.0
    assert presets["creative"].settings.seed == 7
    assert presets["creative"].settings.top_k == GenerationSettings().top_k  # unspecified: defaults


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"temperature": 0.5}', "'mode' must be one of"),
    ('{"mode": "thinking", "temprature": 0.5}', "unknown setting"),
    ('{"mode": "thinking", "top_p": 3}', "top_p must be between"),
    ('{"mode": "thinking", "temperature": 0}', "greedy decoding"),
])
def test_malformed_preset_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(PresetError, match=message) as err:
        load_preset_file(path)
    assert "broken.json" in str(err.value)


def test_unknown_preset():
    with pytest.raises(PresetError, match="unknown preset 'nope'.*thinking"):
        get_preset("nope")


@pytest.mark.parametrize("changes,message", [
    (dict(temperature=-0.1), "temperature must be between 0 and 2"),
    (dict(temperature=2.5), "temperature must be between"),
    (dict(top_p=0), r"top_p must be between 0 \(excluded\) and 1"),
    (dict(top_k=-1), "top_k must be between"),
    (dict(top_k=2.5), "whole number"),
    (dict(min_p=1.5), "min_p must be between"),
    (dict(presence_penalty=2.5), "presence_penalty must be between 0 and 2"),
    (dict(max_new_tokens=0), "max_new_tokens must be between 1 and 38912"),
    (dict(max_new_tokens=38913), "max_new_tokens must be between 1 and 38912"),
    (dict(seed=-1), "seed must be between"),
    (dict(temperature="hot"), "must be a number"),
    (dict(temperature=True), "must be a number"),
])
def test_out_of_range_settings_are_rejected(changes, message):
    with pytest.raises(InvalidSettings, match=message):
        GenerationSettings().with_updates(**changes).validate(thinking=False)


def test_greedy_is_refused_in_thinking_mode_with_the_cards_reason():
    greedy = GenerationSettings(temperature=0)
    assert greedy.validate(thinking=False) is greedy
    with pytest.raises(InvalidSettings) as err:
        greedy.validate(thinking=True)
    assert str(err.value) == GREEDY_IN_THINKING_REASON
    assert "endless repetitions" in GREEDY_IN_THINKING_REASON


def test_max_new_tokens_limits():
    assert GenerationSettings().max_new_tokens == 32768
    assert GenerationSettings(max_new_tokens=38912).validate(thinking=True)


@pytest.mark.parametrize("desired,factor", [(1000, 1.0), (32768, 1.0), (40000, 1.5), (65536, 2.0),
                                            (100000, 3.5), (131072, 4.0)])
def test_recommended_factor(desired, factor):
    assert yarn.recommend_factor(desired) == factor


def test_yarn_limits_and_window():
    assert yarn.context_window(1) == 32768
    assert yarn.context_window(2) == 65536
    assert yarn.context_window(4) == 131072
    for bad in (0.5, 4.5, float("nan"), "2"):
        with pytest.raises(InvalidSettings):
            yarn.context_window(bad)
    with pytest.raises(InvalidSettings, match="at most 131,072"):
        yarn.recommend_factor(200000)


def test_yarn_merge_keeps_rope_theta():
    existing = {"rope_theta": 1000000.0, "rope_type": "default"}
    merged = yarn.rope_parameters_with_yarn(existing, 2.0)
    assert merged == {"rope_theta": 1000000.0, "rope_type": "yarn", "factor": 2.0,
                      "original_max_position_embeddings": 32768}
    assert existing == {"rope_theta": 1000000.0, "rope_type": "default"}  # not mutated
    back = yarn.rope_parameters_with_yarn(merged, 1.0)
    assert back == {"rope_theta": 1000000.0, "rope_type": "default"}
    assert yarn.yarn_dict(1.0) is None
    assert yarn.yarn_dict(4)["factor"] == 4.0
