"""Errors whose message is written for the user: the CLI prints it, the UI shows it."""


class PlaygroundError(Exception):
    """Base class: ``str(err)`` is one clear line fit for a user."""


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
