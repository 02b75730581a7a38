"""Getting model files onto the disk: local paths, or the Hugging Face Hub.

Downloads go through ``huggingface_hub`` into the standard HF cache, with progress reported to a
callback ``progress(fraction, message)``.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from core.catalog import ModelSpec
from core.errors import ModelNotFound
from core.events import ProgressFn


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


def _cached_repo_files(repo_id: str) -> list[str]:
    """File names of ``repo_id`` found in the local HF cache's snapshots (offline listing)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return []
    return sorted({p.relative_to(snap).as_posix() for snap in snapshots.iterdir() if snap.is_dir()
                   for p in snap.rglob("*") if p.is_file() or p.is_symlink()})


def repo_files(repo_id: str) -> list[str]:
    """The repo's file names: from the Hub if reachable, else from the local cache."""
    try:
        from huggingface_hub import HfApi

        # model_info fails at once without a network; list_repo_files retries for ~25 s
        return [sibling.rfilename for sibling in HfApi().model_info(repo_id).siblings or []]
    except Exception:  # offline, gated, missing: the cache may still know the files
        return _cached_repo_files(repo_id)


def match_filename(wanted: str, files: list[str]) -> str | None:
    """``wanted`` as spelled in ``files``: exact match first, then ignoring case.

    Qwen's GGUF file names differ in case between documents and repos (``Q4_K_M`` vs ``q4_k_m``).
    """
    if wanted in files:
        return wanted
    folded = [f for f in files if f.casefold() == wanted.casefold()]
    return folded[0] if folded else None


def resolve_repo_filename(spec: ModelSpec) -> str:
    """The real name of ``spec.filename`` in its Hub repo (case-insensitive match).

    If the repo's files cannot be listed at all, the name is returned unchanged (the download
    then reports the real problem); if they can and none matches, :class:`ModelNotFound` lists
    the repo's model files.
    """
    assert spec.filename
    files = repo_files(spec.source)
    if not files:
        return spec.filename
    found = match_filename(spec.filename, files)
    if found is None:
        models = [f for f in files if f.lower().endswith((".gguf", ".safetensors"))] or files
        raise ModelNotFound(f"{spec.source} has no file {spec.filename!r}; it has: {', '.join(models[:20])}")
    return found


def fetch_model(spec: ModelSpec, progress: ProgressFn | None = None) -> Path:
    """Local path of the model's files (a folder, or a file for GGUF), downloading if needed."""
    if spec.local_path:  # made on this machine (the tiny models): a folder, or its one GGUF file
        path = Path(spec.local_path)
        ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
        return ggufs[0] if len(ggufs) == 1 else path
    if spec.is_tiny:
        raise ModelNotFound(f"{spec.name} is built by the playground: load it through it (python app.py build-tiny)")
    path = Path(spec.source).expanduser()
    if path.exists():
        return path
    if path.is_absolute():  # a local model (resolve_model stores its absolute path), not a repo id
        raise ModelNotFound(f"{spec.source} no longer exists: the model was moved or deleted")
    from huggingface_hub import hf_hub_download, snapshot_download

    tqdm_class = _tqdm_reporting(progress, f"Downloading {spec.source}")
    try:
        if spec.filename:
            filename = resolve_repo_filename(spec)
            return Path(hf_hub_download(spec.source, filename, tqdm_class=tqdm_class))
        return Path(snapshot_download(spec.source, tqdm_class=tqdm_class))
    except ModelNotFound:
        raise
    except Exception as exc:  # network, auth, missing repo: one clear message
        raise _hub_error(spec, exc) from exc


def available_offline(spec: ModelSpec) -> bool:
    """Whether the model can be used right now without the network."""
    if spec.backend == "remote":
        return False
    if spec.is_tiny:
        return True  # built on this machine on first use
    if Path(spec.source).expanduser().exists():
        return True
    from huggingface_hub import try_to_load_from_cache

    wanted = spec.filename or "config.json"
    if spec.filename:  # the cached spelling may differ in case
        wanted = match_filename(spec.filename, _cached_repo_files(spec.source)) or spec.filename
    return isinstance(try_to_load_from_cache(spec.source, wanted), str)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def checkpoint_size(spec: ModelSpec) -> int | None:
    """Bytes of the model's files, before any download: local files when they are here
    (the tiny models, a local path), else the catalog's ``size_gb``, else the Hub's file
    metadata (online only); None when nothing says."""
    local = Path(spec.local_path) if spec.local_path else Path(spec.source).expanduser()
    if (spec.local_path or not spec.is_tiny) and local.is_absolute() and local.exists():
        files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)
    if spec.size_gb is not None:
        return int(spec.size_gb * 10**9)
    if spec.is_tiny or spec.backend == "remote":
        return None
    return _hub_size(spec)


def _hub_size(spec: ModelSpec) -> int | None:
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        return None
    try:
        siblings = HfApi().model_info(spec.source, files_metadata=True, timeout=10).siblings or []
    except Exception:  # offline, gated, missing: no size
        return None
    sizes = {s.rfilename: s.size for s in siblings if s.size is not None}
    if spec.filename:
        found = match_filename(spec.filename, list(sizes))
        return sizes[found] if found else None
    weights = [size for name, size in sizes.items() if name.endswith(".safetensors")] or \
        [size for name, size in sizes.items() if name.endswith(_WEIGHT_SUFFIXES)]
    return sum(weights) if weights else None
