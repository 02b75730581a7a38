"""GGUF twins of the tiny dense model, for the llama.cpp backend (like Qwen/Qwen3-*-GGUF).

Written with the ``gguf`` package straight from the bf16 checkpoint (llama.cpp's
``convert_hf_to_gguf.py`` ships in no installable package):

- ``gguf-f16``: 2-D weights in F16, norms in F32 (what ``convert_hf_to_gguf.py --outtype f16`` does);
- ``gguf-q8_0``: 2-D weights quantized to Q8_0 with ``gguf.quants.quantize`` (blocks of 32: every
  row length here, 128 or 256, is a multiple);
- ``gguf-q4_k_m``: llama.cpp's own quantizer (``llama_cpp.llama_model_quantize``) run on the F16
  file.  K-quants need rows that are multiples of 256; the tiny model's hidden size is 128, so
  llama.cpp falls back to a legacy type for those tensors (its usual behaviour): only
  ``ffn_down`` (rows of 256) really gets a K-quant.  The file still says Q4_K_M.

Each format is a folder holding exactly one ``.gguf`` file.  The metadata mirrors Qwen's own
GGUFs: architecture ``qwen3``, tokenizer model ``gpt2`` with pre-tokenizer ``qwen2`` (the token
list, types and merges of the tiny BPE), ``<|endoftext|>`` as BOS/pad and ``<|im_end|>`` as EOS, no
BOS added, ``context_length`` 40960 (as in Qwen3's GGUFs, which is why ``yarn_orig_ctx`` must be
passed explicitly), and the project's chat template as ``tokenizer.chat_template``.  Every file is
checked after writing: llama.cpp must follow the whole script under greedy decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.qwen3_template import QWEN3_CHAT_TEMPLATE

from .registry import register_format

ARCH = "qwen3"
GGUF_CONTEXT_LENGTH = 40960  # what Qwen3's GGUFs declare (32,768 output + 8,192 prompt)
FILE_STEM = "tiny-qwen3"


def gguf_file(folder: Path) -> Path:
    """The single ``.gguf`` file of a tiny GGUF format folder."""
    files = sorted(folder.glob("*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"{folder} should hold exactly one .gguf file, found {len(files)}")
    return files[0]


def _load_checkpoint(src: Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    import torch
    from safetensors.torch import load_file

    config = json.loads((src / "config.json").read_text())
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(src.glob("*.safetensors")):
        for name, t in load_file(shard).items():
            tensors[name] = t.to(torch.float32).numpy()
    tokenizer = json.loads((src / "tokenizer.json").read_text())
    return config, tensors, tokenizer


def _vocab(tokenizer: dict, vocab_size: int,
           pad: bool = False) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, special ids) from a tokenizers ``tokenizer.json``.

    ``pad``: ids the tokenizer does not have (an embedding larger than the vocabulary, as in
    Qwen3's 151,936 rows) become ``[PAD<id>]`` tokens of type UNUSED, as convert_hf_to_gguf does.
    """
    import gguf

    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.NORMAL)] * vocab_size
    for text, i in tokenizer["model"]["vocab"].items():
        tokens[i] = text
    special: dict[str, int] = {}
    for added in tokenizer["added_tokens"]:
        i = added["id"]
        tokens[i] = added["content"]
        # Like convert_hf_to_gguf: special added tokens are CONTROL (never printed unless asked),
        # the others (<think>, </think>) USER_DEFINED (always printed).
        types[i] = int(gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED)
        special[added["content"]] = i
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing and pad:
        for i in missing:
            tokens[i], types[i] = f"[PAD{i}]", int(gguf.TokenType.UNUSED)
    elif missing:
        raise ValueError(f"tokenizer has no token for ids {missing[:5]}...")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    return tokens, types, merges, special  # type: ignore[return-value]


def write_gguf(src: Path, path: Path, qtype: str, pad_vocab: bool = False) -> None:
    """Write the bf16 checkpoint in ``src`` as a GGUF file with 2-D weights in ``qtype``.

    ``pad_vocab``: the config's vocab_size may exceed the tokenizer's (see :func:`_vocab`).
    """
    import gguf

    config, tensors, tokenizer = _load_checkpoint(src)
    weight_type = {"F16": gguf.GGMLQuantizationType.F16, "Q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    file_type = {"F16": gguf.LlamaFileType.MOSTLY_F16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    n_layers = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("Tiny Qwen3")
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(GGUF_CONTEXT_LENGTH)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])

    tokens, types, merges, special = _vocab(tokenizer, config["vocab_size"], pad_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|endoftext|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_pad_token_id(special["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(QWEN3_CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, n_layers)
    for hf_name, data in tensors.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        if data.ndim == 1:  # norms stay F32, as llama.cpp expects
            writer.add_tensor(name, data.astype(np.float32))
        elif weight_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, weight_type), raw_dtype=weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_with_llama_cpp(src: Path, dst: Path, ftype_name: str) -> None:
    """Run llama.cpp's own quantizer (``llama-quantize``) through llama-cpp-python."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise RuntimeError(f"llama_model_quantize({ftype_name}) failed with code {rc}")


def verify_script(path: Path) -> dict[str, int]:
    """Greedy-decode every scripted case (tool cases included) with llama.cpp; raise if any deviates.

    Returns the number of generated tokens per case (for the build info).
    """
    import llama_cpp

    from .script import CASES, TOOL_CASES
    from .tokenizer import render_chat

    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=1, n_threads_batch=1, n_batch=512,
                          verbose=False, seed=0)
    try:
        counts = {}
        for case in [*CASES, *TOOL_CASES]:
            prompt = render_chat(case.messages, case.enable_thinking, case.tools)
            ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            limit = 128 if case.ends else 40
            out: list[int] = []
            for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    break
                out.append(token)
                if len(out) >= limit:
                    break
            text = llm.detokenize(out).decode("utf-8", errors="replace")
            expected = case.completion if case.ends else case.completion[: len(text)]
            if text != expected or (not case.ends and len(out) < limit):
                raise RuntimeError(f"{path.name} does not follow the script on case {case.name!r}: "
                                   f"{text[:120]!r} != {expected[:120]!r}")
            counts[case.name] = len(out)
        return counts
    finally:
        llm.close()


def _write_and_verify(src: Path, dst: Path, qtype: str) -> None:
    path = dst / f"{FILE_STEM}-{qtype}.gguf"
    write_gguf(src, path, qtype)
    verify_script(path)


@register_format("gguf-f16", needs="bf16")
def write_gguf_f16(src: Path, dst: Path) -> None:
    """GGUF (F16 weights, F32 norms) twin of the bf16 model, for llama.cpp."""
    _write_and_verify(src, dst, "F16")


@register_format("gguf-q8_0", needs="bf16")
def write_gguf_q8_0(src: Path, dst: Path) -> None:
    """GGUF Q8_0 twin of the bf16 model (quantized with gguf.quants), for llama.cpp."""
    _write_and_verify(src, dst, "Q8_0")


@register_format("gguf-q4_k_m", needs="gguf-f16")
def write_gguf_q4_k_m(src: Path, dst: Path) -> None:
    """GGUF Q4_K_M twin, quantized by llama.cpp itself from the F16 file (legacy-type fallbacks)."""
    path = dst / f"{FILE_STEM}-Q4_K_M.gguf"
    quantize_with_llama_cpp(gguf_file(src), path, "Q4_K_M")
    verify_script(path)
