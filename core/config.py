"""App-wide configuration from the environment, and hosted mode's rules.

Hosted mode (on by default on Hugging Face Spaces, ``--hosted`` elsewhere) serves strangers:
- only catalog models load (no local paths, no arbitrary repo ids unless the host lists them);
- remote servers' URLs are fixed by the host and API keys come from the environment;
- messages are limited in size before any compute;
- tools are the host's only (``QWEN3_PLAYGROUND_MCP_CONFIG``'s servers, narrowed by
  ``QWEN3_PLAYGROUND_TOOLS``), rate-limited per visitor; visitors never add servers or run code;
- the model is the host's choice (``QWEN3_PLAYGROUND_MODEL``) unless it lets visitors switch
  (``QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS=1``), and then only to models the machine can hold
  (``core.memory``; ``QWEN3_PLAYGROUND_MEMORY_GB`` overrides the measured free memory);
- the OpenAI-compatible API (``/v1``) is off unless the host turns it on
  (``QWEN3_PLAYGROUND_OPENAI_API=1``; elsewhere on by default), with an optional Bearer key
  (``QWEN3_PLAYGROUND_API_KEY``, hosted or not).
``trust_remote_code`` is never enabled by any backend, hosted or not.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.catalog import ModelSpec, load_catalog, resolve_model
from core.errors import InvalidSettings, ModelNotFound, PlaygroundError, PromptError
from core.mcp_config import ServerConfig, load_mcp_config
from core.messages import content_text, message_chars
from core.messages import field as message_field
from core.tools import DEFAULT_MAX_ROUNDS, MAX_ROUNDS_LIMIT

ENV_PREFIX = "QWEN3_PLAYGROUND_"
CONVERSATION_FACTOR = 10  # a conversation may hold up to 10 messages' worth of text
ALTERNATIVES_FACTOR = 4  # the alternatives an edit or a Regenerate keeps: up to 4 conversations' worth
# a chat or comparison file may hold this many bytes per character of the conversation limit
# (UTF-8, JSON escapes and indentation, a Markdown export's text plus its base64 copy, Compare's columns)
UPLOAD_BYTES_PER_CHAR = 16
REQUEST_SLACK_BYTES = 64 * 1024  # a request's fields besides its conversation (settings, model, multipart framing)
MIN_REQUEST_BYTES = 8 * 1024 * 1024  # a pasted megabyte is told "at most N characters", not cut off at the door
DEFAULT_HOSTED_QUEUE = 64  # hosted mode: requests waiting in Gradio's queue at once (more are turned away)
DEFAULT_TOOL_CALLS_PER_MINUTE = 20


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _strict_flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(ENV_PREFIX + name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InvalidSettings(f"{ENV_PREFIX}{name} must be 1 or 0 (true or false), got {raw!r}")


def _optional_flag(env: Mapping[str, str], name: str) -> bool | None:
    """``QWEN3_PLAYGROUND_<name>`` as 1 / 0, None when unset."""
    return _strict_flag(env, name) if (env.get(ENV_PREFIX + name) or "").strip() else None


def _gigabytes(env: Mapping[str, str], name: str) -> float | None:
    raw = (env.get(ENV_PREFIX + name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidSettings(f"{ENV_PREFIX}{name} must be a number of GB, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise InvalidSettings(f"{ENV_PREFIX}{name} must be more than 0 GB, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1, high: int | None = None) -> int:
    """``QWEN3_PLAYGROUND_<name>`` as a whole number in [low, high]; the error names the variable."""
    raw = (env.get(ENV_PREFIX + name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSettings(f"{ENV_PREFIX}{name} must be a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidSettings(f"{ENV_PREFIX}{name} must be {bounds}, got {value}")
    return value


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in (value or "").split(",") if n.strip()))


def _host_servers(path: str | None) -> dict[str, ServerConfig]:
    """The host's MCP servers, parsed once at start (a bad file stops start-up, naming the variable)."""
    if not path or not path.strip():
        return {}
    try:
        return load_mcp_config(path.strip())
    except PlaygroundError as exc:
        raise InvalidSettings(f"{ENV_PREFIX}MCP_CONFIG: {exc}") from None


@dataclass(frozen=True)
class AppConfig:
    hosted: bool = False
    default_model: str | None = None  # the model sessions start on (None: pick one, see playground.startup)
    max_models: int = 1  # models loaded at once, a hard cap (see backends.pool)
    # may visitors load another model or YaRN factor than the host's? None: yes, unless hosted
    visitors_switch_models: bool | None = None
    memory_gb: float | None = None  # hosted mode: memory models may use (None: measured at start)
    max_message_chars: int = 100_000  # a longer message is refused before any compute
    max_queue: int | None = None  # requests waiting at once (None: DEFAULT_HOSTED_QUEUE hosted, else no limit)
    allowed_models: tuple[str, ...] = ()  # hosted mode: repo ids allowed beyond the catalog
    remote_base_url: str | None = None  # hosted mode: the only server the remote backend may use
    remote_api_key_env: str = "OPENAI_API_KEY"
    # The host's tools (hosted mode: the only ones; elsewhere: on top of a user's own): server name ->
    # its core.mcp_config.ServerConfig. Not in the repr: a server's env may hold secrets.
    tool_servers: Mapping[str, ServerConfig] = field(default_factory=dict, repr=False, hash=False)
    allowed_tools: tuple[str, ...] = ()  # tool names visitors may use (empty: every tool of tool_servers)
    tool_calls_per_minute: int = DEFAULT_TOOL_CALLS_PER_MINUTE  # per visitor, hosted mode
    max_tool_rounds: int = DEFAULT_MAX_ROUNDS  # hosted mode: a selection's max_rounds is capped at this
    code_interpreter: bool = False  # the host's code interpreter (never in hosted mode)
    # the OpenAI-compatible API (/v1, ui/openai_routes.py): None: on unless hosted (a Space turns it on)
    openai_api: bool | None = None
    api_key: str | None = field(default=None, repr=False)  # Bearer key the API then requires (None: none)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AppConfig:
        """Read ``QWEN3_PLAYGROUND_*`` variables; a Space (``SPACE_ID`` set) is hosted by default."""
        env = os.environ if env is None else env
        get = lambda name: env.get(ENV_PREFIX + name)  # noqa: E731
        config = cls(
            hosted=_flag(get("HOSTED"), default=bool(env.get("SPACE_ID"))),
            default_model=get("MODEL") or None,
            max_models=_int(env, "MAX_MODELS", 1),
            visitors_switch_models=_optional_flag(env, "VISITORS_SWITCH_MODELS"),
            memory_gb=_gigabytes(env, "MEMORY_GB"),
            max_message_chars=_int(env, "MAX_MESSAGE_CHARS", 20_000 if env.get("SPACE_ID") else 100_000),
            max_queue=_int(env, "MAX_QUEUE", 0) or None,
            allowed_models=_names(get("ALLOWED_MODELS")),
            remote_base_url=get("REMOTE_URL") or None,
            remote_api_key_env=get("REMOTE_KEY_ENV") or "OPENAI_API_KEY",
            tool_servers=_host_servers(get("MCP_CONFIG")),
            allowed_tools=_names(get("TOOLS")),
            tool_calls_per_minute=_int(env, "TOOL_CALLS_PER_MINUTE", DEFAULT_TOOL_CALLS_PER_MINUTE),
            max_tool_rounds=_int(env, "MAX_TOOL_ROUNDS", DEFAULT_MAX_ROUNDS, high=MAX_ROUNDS_LIMIT),
            code_interpreter=_strict_flag(env, "CODE_INTERPRETER"),
            openai_api=_optional_flag(env, "OPENAI_API"),
            api_key=(get("API_KEY") or "").strip() or None,
        )
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if config.max_models < 1:
            raise InvalidSettings("QWEN3_PLAYGROUND_MAX_MODELS must be at least 1")
        if config.hosted and config.code_interpreter:
            raise InvalidSettings(f"{ENV_PREFIX}CODE_INTERPRETER cannot be on in hosted mode: visitors never run code")
        return config

    @property
    def visitors_may_switch(self) -> bool:
        """Whether a visitor may load another model (or YaRN factor) than the host's start model."""
        return (not self.hosted) if self.visitors_switch_models is None else self.visitors_switch_models

    @property
    def openai_api_on(self) -> bool:
        """Whether ``/v1`` serves (``QWEN3_PLAYGROUND_OPENAI_API``; by default on, except hosted)."""
        return (not self.hosted) if self.openai_api is None else self.openai_api

    @property
    def remote_api_key(self) -> str | None:
        return os.environ.get(self.remote_api_key_env)

    def resolve(self, ref: str, backend: str | None = None, catalog: list[ModelSpec] | None = None) -> ModelSpec:
        """``core.catalog.resolve_model`` under this configuration's rules (``catalog``: the
        catalog already read, else it is read now).

        ``remote:<served model>`` names a model on the host's remote server
        (``QWEN3_PLAYGROUND_REMOTE_URL``), hosted or not: a page never supplies a URL.
        """
        ref = (ref or "").strip()
        catalog = load_catalog() if catalog is None else catalog
        if not self.hosted:
            if backend is None and ref.startswith("remote:"):
                if not self.remote_base_url:
                    raise ModelNotFound("no remote server is configured: set QWEN3_PLAYGROUND_REMOTE_URL")
                return resolve_model(ref.removeprefix("remote:"), "remote")
            return resolve_model(ref, backend, catalog=catalog)
        if backend == "remote" or (backend is None and ref.startswith("remote:")):
            if not self.remote_base_url:
                raise ModelNotFound("this hosted playground has no remote server configured")
            return resolve_model(ref.removeprefix("remote:"), "remote")
        for spec in catalog:
            if ref in (spec.name, spec.source) and spec.backend != "remote":
                return spec
        if ref in self.allowed_models:
            return resolve_model(ref, None, catalog=[])
        raise ModelNotFound(f"{ref!r} is not available here: this hosted playground only serves the models "
                            "in its catalog")

    def check_spec(self, spec: ModelSpec, base_url: str | None = None,
                   catalog: list[ModelSpec] | None = None) -> None:
        """Refuse (``ModelNotFound``) a resolved model hosted mode does not serve, whatever path
        produced it: the model pool calls this before every load (defence in depth)."""
        if not self.hosted:
            return
        if spec.backend == "remote":
            if not self.remote_base_url:
                raise ModelNotFound("this hosted playground has no remote server configured")
            if base_url != self.remote_base_url:
                raise ModelNotFound("this hosted playground only talks to the remote server its host configured")
            return
        for entry in load_catalog() if catalog is None else catalog:
            if entry.backend != "remote" and (spec.source, spec.filename) == (entry.source, entry.filename):
                return
        if spec.source in self.allowed_models:
            return
        raise ModelNotFound(f"{spec.source!r} is not available here: this hosted playground only serves the "
                            "models in its catalog")

    # -- size limits: the one place they are decided, for every endpoint, upload and import --
    def check_text(self, text: str, what: str = "the message") -> None:
        """Refuse (``PromptError``) text a user typed (``what``: "the message", "the system
        prompt", "the pasted text"...) over ``max_message_chars``."""
        if len(text) > self.max_message_chars:
            raise PromptError(f"{what} is {len(text):,} characters long; this playground accepts at most "
                              f"{self.max_message_chars:,}")

    def check_message(self, text: str) -> None:
        self.check_text(text, "the message")

    @property
    def max_conversation_chars(self) -> int:
        """The whole conversation sent with one request (earlier turns included)."""
        return CONVERSATION_FACTOR * self.max_message_chars

    def check_conversation(self, history: Sequence[Any], system_prompt: str | None = None) -> None:
        """Refuse (``PromptError``) before any compute: text a user typed (a ``user``, ``system``
        or ``tool`` message, the system prompt) over the message limit, or a conversation over
        ``max_conversation_chars``. A conversation's size is every character its messages carry
        (``core.messages.message_chars``): replies, reasoning panels, notes, their metadata
        (titles, a tool result's record) and tool calls, shown or sent, all count."""
        messages = [{"role": "system", "content": system_prompt}, *history] if system_prompt else list(history)
        roles = [message_field(m, "role") for m in messages]
        last_user = max((i for i, role in enumerate(roles) if role == "user"), default=-1)
        for i, (role, message) in enumerate(zip(roles, messages)):
            if role != "assistant":
                which = ("the message" if i == last_user else "the system prompt" if role == "system"
                         else f"message {i + 1} of the conversation")
                self.check_text(content_text(message_field(message, "content")), which)
        total = sum(message_chars(m) for m in messages)
        if total > self.max_conversation_chars:
            raise PromptError(f"the conversation is {total:,} characters long; this playground accepts at most "
                              f"{self.max_conversation_chars:,}: clear the chat or export it and start again")

    @property
    def max_alternatives_chars(self) -> int:
        """What the alternatives a chat keeps (``core.branches``) may hold besides the chat itself."""
        return ALTERNATIVES_FACTOR * self.max_conversation_chars

    def check_alternatives(self, chars: int) -> None:
        if chars > self.max_alternatives_chars:
            raise PromptError(f"the chat's alternatives hold {chars:,} characters; this playground keeps at most "
                              f"{self.max_alternatives_chars:,}: export the chat, then clear it")

    @property
    def max_upload_bytes(self) -> int:
        """The largest chat or comparison file accepted (uploads, imports, Gradio's ``max_file_size``)."""
        return UPLOAD_BYTES_PER_CHAR * self.max_conversation_chars

    @property
    def max_request_bytes(self) -> int:
        """The largest HTTP request body the server reads, on every route (Gradio's events and
        API, the OpenAI-compatible API, uploads): a conversation and its alternatives, at the
        upload cap's bytes per character, plus room for the request's own fields; at least
        ``MIN_REQUEST_BYTES``, so that a message merely over the limit still gets its worded refusal."""
        return max(MIN_REQUEST_BYTES, UPLOAD_BYTES_PER_CHAR * (self.max_conversation_chars + self.max_alternatives_chars)
                   + REQUEST_SLACK_BYTES)

    def check_upload(self, size: int, what: str = "the file") -> None:
        """Refuse (``PromptError``) a file or import of ``size`` bytes over ``max_upload_bytes``, unread."""
        if size > self.max_upload_bytes:
            raise PromptError(f"{what} is {size:,} bytes; this playground accepts files of at most "
                              f"{self.max_upload_bytes:,} bytes")

    @property
    def queue_size(self) -> int | None:
        """Requests Gradio's queue holds at once (hosted: ``DEFAULT_HOSTED_QUEUE`` unless set)."""
        if self.max_queue is not None:
            return self.max_queue
        return DEFAULT_HOSTED_QUEUE if self.hosted else None
