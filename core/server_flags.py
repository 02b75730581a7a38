"""The serving engines' own start-up flags for a YaRN factor (a pure function; the UI shows them).

With a remote OpenAI-compatible server, YaRN is a server-side setting: the playground cannot
change it per request, so it shows the exact flags to start the server with instead.

    >>> server_flags(4.0)["llama-server"]
    ['--rope-scaling', 'yarn', '--rope-scale', '4', '--yarn-orig-ctx', '32768', '--ctx-size', '131072']

Factor 1 means YaRN off: no flags at all (the engines' defaults are the native context).
"""
from __future__ import annotations

import json
import shlex

from core.yarn import ORIGINAL_CONTEXT, context_window, validate_factor, yarn_dict

ENGINES = ("vllm", "sglang", "llama-server")
# How each engine is started, for display ("<command> <model> <flags>").
LAUNCH = {
    "vllm": "vllm serve MODEL",
    "sglang": "python -m sglang.launch_server --model-path MODEL",
    "llama-server": "llama-server -m MODEL.gguf",
}


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def server_flags(factor: float, context_length: int | None = None) -> dict[str, list[str]]:
    """Per engine, the argv tokens that enable YaRN with ``factor`` (empty lists for factor 1).

    ``context_length`` (default: 32768 x factor) is the serving context: vLLM
    ``--max-model-len``, SGLang ``--context-length``, llama-server ``--ctx-size``.
    """
    factor = validate_factor(factor)
    scaling = yarn_dict(factor)
    if scaling is None:
        return {engine: [] for engine in ENGINES}
    n = int(context_length) if context_length else context_window(factor)
    return {
        "vllm": ["--rope-scaling", _json(scaling), "--max-model-len", str(n)],
        "sglang": ["--json-model-override-args", _json({"rope_scaling": scaling}), "--context-length", str(n)],
        "llama-server": ["--rope-scaling", "yarn", "--rope-scale", f"{factor:g}",
                         "--yarn-orig-ctx", str(ORIGINAL_CONTEXT), "--ctx-size", str(n)],
    }


def server_command_lines(factor: float, context_length: int | None = None) -> dict[str, str]:
    """The flags of :func:`server_flags` as shell text, quoted for copy and paste."""
    return {engine: shlex.join(flags) for engine, flags in server_flags(factor, context_length).items()}
