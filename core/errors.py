"""Errors whose message is written for the user: the CLI prints it, the UI shows it."""


class PlaygroundError(Exception):
    """Base class: ``str(err)`` is one clear line fit for a user.

    ``public``: the same line fit for a stranger (hosted mode), when ``str(err)`` shows what only
    the host may see (an upstream server's URL or its reply's text); None when there is nothing
    to hide."""

    def __init__(self, *args: object, public: str | None = None) -> None:
        super().__init__(*args)
        self.public = public


class InvalidSettings(PlaygroundError):
    """A generation or load setting is out of range or not allowed."""


class PresetError(PlaygroundError):
    """A preset file is malformed, or a preset name is unknown."""


class PromptError(PlaygroundError):
    """The prompt is empty, malformed or longer than the context window."""


class ModelNotFound(PlaygroundError):
    """The model name, path or repo id does not resolve to anything usable."""


class ModelLoadError(PlaygroundError):
    """The model exists but could not be loaded (corrupt, incomplete, unsupported)."""


class BackendError(PlaygroundError):
    """A backend failed while generating; partial output already streamed is kept."""


class ModelNotServed(PlaygroundError):
    """Hosted mode: a model this playground does not serve to visitors (too big for the machine,
    or another model than the one its host chose)."""


class ModelSlotsBusy(PlaygroundError):
    """Every model slot (``--max-models``) stayed held by replies still running: nothing loaded."""
