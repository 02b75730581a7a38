"""Hosted mode: catalog-only models, fixed remote servers, message limits; env parsing."""
import pytest

from core.config import AppConfig
from core.errors import InvalidSettings, ModelNotFound, PromptError


def test_defaults_and_spaces_detection():
    local = AppConfig.from_env({})
    assert not local.hosted and local.max_models == 1 and local.max_message_chars == 100_000
    space = AppConfig.from_env({"SPACE_ID": "someone/qwen3-playground"})
    assert space.hosted and space.max_message_chars == 20_000
    assert not AppConfig.from_env({"SPACE_ID": "x", "QWEN3_PLAYGROUND_HOSTED": "0"}).hosted
    config = AppConfig.from_env({"QWEN3_PLAYGROUND_HOSTED": "1", "QWEN3_PLAYGROUND_MAX_MODELS": "3",
                                 "QWEN3_PLAYGROUND_ALLOWED_MODELS": "me/a, me/b", "QWEN3_PLAYGROUND_MODEL": "tiny-fp8"})
    assert config.hosted and config.max_models == 3 and config.allowed_models == ("me/a", "me/b")
    assert config.default_model == "tiny-fp8"
    assert AppConfig.from_env({}, hosted=True).hosted
    with pytest.raises(InvalidSettings, match="QWEN3_PLAYGROUND"):
        AppConfig.from_env({"QWEN3_PLAYGROUND_MAX_MODELS": "many"})


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc", "~/.ssh", "someone/evil-model", "tiny:../../x",
                                 "./tiny-bf16", "Qwen/Qwen3-4B-FP8/../../x"])
def test_hosted_mode_only_serves_the_catalog(ref, tmp_path):
    with pytest.raises(ModelNotFound, match="only serves the models in its catalog"):
        AppConfig(hosted=True).resolve(ref)


def test_hosted_mode_accepts_catalog_names_sources_and_allowed_repos(tmp_path):
    hosted = AppConfig(hosted=True, allowed_models=("me/my-qwen3",))
    assert hosted.resolve("tiny-bf16").source == "tiny:bf16"
    assert hosted.resolve("Qwen/Qwen3-4B-FP8").name == "qwen3-4b-fp8"
    assert hosted.resolve("me/my-qwen3").source == "me/my-qwen3"
    (tmp_path / "config.json").write_text("{}")
    assert AppConfig(hosted=False).resolve(str(tmp_path)).source == str(tmp_path)  # fine outside hosted mode
    with pytest.raises(ModelNotFound, match="only serves"):
        hosted.resolve(str(tmp_path))
    with pytest.raises(ModelNotFound, match="no remote server"):
        hosted.resolve("served-model", backend="remote")
    assert AppConfig(hosted=True, remote_base_url="http://127.0.0.1:1/v1").resolve("m", "remote").backend == "remote"


def test_message_limit():
    config = AppConfig(max_message_chars=10)
    config.check_message("x" * 10)
    with pytest.raises(PromptError, match="at most 10"):
        config.check_message("x" * 11)
