"""Read a GGUF file's header (metadata and tensor table) fast, without loading the model.

``gguf.GGUFReader`` parses every array element in Python (about 10 s for a 152k-token
vocabulary) and fails on a truncated file with a numpy reshape message.  Before handing a file
to llama.cpp (whose own error is only "Failed to load model from file") we need two things
quickly: the numbers that size the KV cache, and a clear verdict on broken files (not GGUF at
all, truncated header, truncated tensor data).  Arrays are skipped, except short ones.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 64  # arrays up to this many items are kept (e.g. per-layer head counts)


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensor_count: int
    data_end: int  # bytes the file must have to hold every tensor
    file_size: int
    array_lengths: dict[str, int] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """KV cache bytes per token of context: layers x kv heads x (key + value dims) x f16."""
        layers = int(self.arch_value("block_count", 0) or 0)
        heads = self.arch_value("attention.head_count", 0)
        kv_heads = self.arch_value("attention.head_count_kv", heads)
        if isinstance(kv_heads, list):  # per-layer counts
            kv_heads = max(kv_heads) if kv_heads else 0
        if isinstance(heads, list):
            heads = max(heads) if heads else 0
        embd = int(self.arch_value("embedding_length", 0) or 0)
        head_dim = embd // int(heads) if heads else 0
        key_len = int(self.arch_value("attention.key_length", head_dim) or head_dim)
        value_len = int(self.arch_value("attention.value_length", head_dim) or head_dim)
        return layers * int(kv_heads or 0) * (key_len + value_len) * bytes_per_value


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise EOFError
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > self.size:
            raise EOFError
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            n = self.take("<Q")
            self.pos += n
            if self.pos > self.size:
                raise EOFError

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        raise ValueError(f"unknown GGUF value type {vtype}")


def _type_size(ggml_type: int) -> tuple[int, int]:
    import gguf

    try:
        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ModelLoadError(f"unknown GGML tensor type {ggml_type}: the file needs a newer llama.cpp") from None


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s GGUF header; raise :class:`ModelLoadError` with a clear reason if broken."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
            if magic != MAGIC:
                shown = f"starts with {magic!r}" if magic else "is empty"
                raise ModelLoadError(f"{path} is not a GGUF file (it {shown}, not b'GGUF'): "
                                     "the llama.cpp backend needs a .gguf model")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, _Cursor(buf, size), size)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


def _parse(path: Path, cur: _Cursor, size: int) -> GGUFHeader:
    cur.pos = 4
    try:
        version = cur.take("<I")
        if version not in (2, 3):
            raise ModelLoadError(f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3")
        n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
        metadata: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.take("<I")
            if vtype == _ARRAY:
                itype, count = cur.take("<I"), cur.take("<Q")
                lengths[key] = count
                if itype == _STRING:
                    if count <= _KEEP_ARRAY:
                        metadata[key] = [cur.string() for _ in range(count)]
                    else:
                        cur.skip_strings(count)
                elif itype in _SCALARS:
                    width = struct.calcsize(_SCALARS[itype])
                    if count <= _KEEP_ARRAY:
                        metadata[key] = [cur.take(_SCALARS[itype]) for _ in range(count)]
                    else:
                        cur.pos += width * count
                        if cur.pos > size:
                            raise EOFError
                else:
                    raise ModelLoadError(f"{path}: unsupported nested array in metadata key {key!r}")
            else:
                metadata[key] = cur.value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
            ggml_type, offset = cur.take("<I"), cur.take("<Q")
            infos.append((name, dims, ggml_type, offset))
    except EOFError:
        raise ModelLoadError(f"{path} is truncated: the file ends inside its GGUF header "
                             f"({size:,} bytes); download it again") from None
    except (ValueError, struct.error) as exc:
        raise ModelLoadError(f"{path} is a corrupt GGUF file: {exc}") from None
    alignment = int(metadata.get("general.alignment", 32) or 32)
    data_start = -(-cur.pos // alignment) * alignment
    data_end = data_start
    for name, dims, ggml_type, offset in infos:
        block, type_size = _type_size(ggml_type)
        elements = 1
        for d in dims:
            elements *= d
        data_end = max(data_end, data_start + offset + elements // block * type_size)
    if data_end > size:
        raise ModelLoadError(
            f"{path} is truncated: its tensors need {data_end:,} bytes but the file has {size:,} "
            f"({size / data_end:.0%}); the download was probably interrupted, fetch it again"
        )
    return GGUFHeader(path=path, version=version, metadata=metadata, tensor_count=n_tensors,
                      data_end=data_end, file_size=size, array_lengths=lengths)
