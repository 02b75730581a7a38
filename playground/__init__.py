"""The playground layer: one owner of configuration, catalog, model pool, start-up and the chat
request, between the edges (``app.py``, ``cli.py``, ``ui/``, ``bench/``) and the engines
(``backends/``). See :mod:`playground.service`."""
from playground.models import load_fresh, materialise, open_model
from playground.service import ChatResult, ModelReady, Playground, PlaygroundEvent

__all__ = ["ChatResult", "ModelReady", "Playground", "PlaygroundEvent", "load_fresh", "materialise", "open_model"]
