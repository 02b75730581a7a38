"""Getting model files onto the disk: the tiny builder, local paths, or the Hugging Face Hub.

Downloads go through ``huggingface_hub`` into the standard HF cache, with progress reported to a
callback ``progress(fraction, message)``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from core.catalog import TINY_PREFIX, ModelSpec
from core.errors import ModelNotFound

ProgressFn = Callable[[float, str], None]


def _tqdm_reporting(progress: ProgressFn | None, label: str) -> type[tqdm] | None:
    """A tqdm class that forwards its progress to ``progress`` (huggingface_hub's hook)."""
    if progress is None:
        return None

    class Reporting(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.total:
                progress(min(1.0, self.n / self.total), f"{label}: {self.desc or 'downloading'}")
            return shown

    return Reporting


def _hub_error(spec: ModelSpec, exc: Exception) -> ModelNotFound:
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return ModelNotFound(f"{spec.source} is gated on the Hub: accept its licence and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(f"{spec.source} does not exist on the Hugging Face Hub (or is private)")
    if isinstance(exc, LocalEntryNotFoundError):
        return ModelNotFound(
            f"{spec.source} is not in the local Hugging Face cache and the Hub cannot be reached"
        )
    return ModelNotFound(f"could not download {spec.source}: {exc}")


def fetch_model(spec: ModelSpec, progress: ProgressFn | None = None) -> Path:
    """Local path of the model's files (a folder, or a file for GGUF), downloading if needed."""
    if spec.is_tiny:
        import tinymodels

        return tinymodels.model_path(spec.source[len(TINY_PREFIX):], progress=progress)
    path = Path(spec.source).expanduser()
    if path.exists():
        return path
    from huggingface_hub import hf_hub_download, snapshot_download

    tqdm_class = _tqdm_reporting(progress, f"Downloading {spec.source}")
    try:
        if spec.filename:
            return Path(hf_hub_download(spec.source, spec.filename, tqdm_class=tqdm_class))
        return Path(snapshot_download(spec.source, tqdm_class=tqdm_class))
    except Exception as exc:  # network, auth, missing repo: one clear message
        raise _hub_error(spec, exc) from exc


def available_offline(spec: ModelSpec) -> bool:
    """Whether the model can be used right now without the network."""
    if spec.backend == "remote":
        return False
    if spec.is_tiny:
        return True  # built locally on first use
    if Path(spec.source).expanduser().exists():
        return True
    from huggingface_hub import try_to_load_from_cache

    wanted = spec.filename or "config.json"
    return isinstance(try_to_load_from_cache(spec.source, wanted), str)
