"""App-wide configuration from the environment, and hosted mode's rules.

Hosted mode (on by default on Hugging Face Spaces, ``--hosted`` elsewhere) serves strangers:
- only catalog models load (no local paths, no arbitrary repo ids unless the host lists them);
- remote servers' URLs are fixed by the host and API keys come from the environment;
- messages are limited in size before any compute.
``trust_remote_code`` is never enabled by any backend, hosted or not.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.catalog import ModelSpec, load_catalog, resolve_model
from core.errors import InvalidSettings, ModelNotFound, PromptError

ENV_PREFIX = "QWEN3_PLAYGROUND_"
CONVERSATION_FACTOR = 10  # a conversation may hold up to 10 messages' worth of text


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AppConfig:
    hosted: bool = False
    default_model: str | None = None  # the model sessions start on (None: pick one, see playground.startup)
    max_models: int = 1  # models loaded at once (LRU beyond that)
    max_message_chars: int = 100_000  # a longer message is refused before any compute
    allowed_models: tuple[str, ...] = ()  # hosted mode: repo ids allowed beyond the catalog
    remote_base_url: str | None = None  # hosted mode: the only server the remote backend may use
    remote_api_key_env: str = "OPENAI_API_KEY"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AppConfig:
        """Read ``QWEN3_PLAYGROUND_*`` variables; a Space (``SPACE_ID`` set) is hosted by default."""
        env = os.environ if env is None else env
        get = lambda name: env.get(ENV_PREFIX + name)  # noqa: E731
        try:
            config = cls(
                hosted=_flag(get("HOSTED"), default=bool(env.get("SPACE_ID"))),
                default_model=get("MODEL") or None,
                max_models=int(get("MAX_MODELS") or 1),
                max_message_chars=int(get("MAX_MESSAGE_CHARS") or (20_000 if env.get("SPACE_ID") else 100_000)),
                allowed_models=tuple(m.strip() for m in (get("ALLOWED_MODELS") or "").split(",") if m.strip()),
                remote_base_url=get("REMOTE_URL") or None,
                remote_api_key_env=get("REMOTE_KEY_ENV") or "OPENAI_API_KEY",
            )
        except ValueError as exc:
            raise InvalidSettings(f"bad {ENV_PREFIX}* environment variable: {exc}") from None
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if config.max_models < 1:
            raise InvalidSettings("QWEN3_PLAYGROUND_MAX_MODELS must be at least 1")
        return config

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

    def check_message(self, text: str) -> None:
        if len(text) > self.max_message_chars:
            raise PromptError(f"the message is {len(text):,} characters long; this playground accepts at most "
                              f"{self.max_message_chars:,}")

    @property
    def max_conversation_chars(self) -> int:
        """The whole conversation sent with one request (earlier turns included)."""
        return CONVERSATION_FACTOR * self.max_message_chars

    def check_conversation(self, messages: Sequence[tuple[str, str]]) -> None:
        """Refuse (``PromptError``) before any compute: text a user typed (a ``user`` or
        ``system`` message, the system prompt) over the message limit, or a conversation
        (every message's text, replies included) over ``max_conversation_chars``.

        ``messages`` are (role, text) pairs, the system prompt as a ``system`` message."""
        last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=-1)
        for i, (role, text) in enumerate(messages):
            if role != "assistant" and len(text) > self.max_message_chars:
                which = ("the message" if i == last_user else "the system prompt" if role == "system"
                         else f"message {i + 1} of the conversation")
                raise PromptError(f"{which} is {len(text):,} characters long; this playground accepts at most "
                                  f"{self.max_message_chars:,}")
        total = sum(len(text) for _, text in messages)
        if total > self.max_conversation_chars:
            raise PromptError(f"the conversation is {total:,} characters long; this playground accepts at most "
                              f"{self.max_conversation_chars:,}: clear the chat or export it and start again")
