"""The alternatives a conversation keeps: what an edit or a Regenerate replaced.

The chat shows one path: the history every handler works on and the only thing the model reads.
A *fork* is a place on that path, before message ``at``, where other continuations exist. Each
alternative is the whole continuation from there (an edited user message and all that followed
it, or a regenerated reply and all that followed it). A fork is found by its prefix:
:func:`prefix_keys` chains a digest of each message's role, text and id, so the same
conversation reaches the same forks whichever alternatives were switched to, and a fork deeper in
an alternative that is not shown waits, under its own prefix, until that alternative is back.

``Branches`` keeps, per fork, the alternatives in the order they were made, the one on the path
being ``None`` in its slot: "2 / 3" stays put as the user steps through them.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import PromptError
from core.messages import content_text, field as message_field, message_chars, metadata_of, plain_history

MAX_ALTERNATIVES = 32  # per fork: beyond it, the oldest alternative not shown is dropped
ROOT_KEY = hashlib.sha256(b"qwen3-playground/branches").hexdigest()[:24]
VERSION = 1

Tail = list[dict[str, Any]]


def _digest(key: str, message: Any) -> str:
    text = json.dumps([message_field(message, "role"), content_text(message_field(message, "content")),
                       str(metadata_of(message).get("id") or "")], ensure_ascii=False)
    return hashlib.sha256(f"{key}\n{text}".encode("utf-8")).hexdigest()[:24]


def prefix_keys(path: Sequence[Any]) -> list[str]:
    """``keys[i]`` names the prefix ``path[:i]`` (``len(path) + 1`` keys, the first for the start)."""
    keys = [ROOT_KEY]
    for message in path:
        keys.append(_digest(keys[-1], message))
    return keys


@dataclass
class Fork:
    """The alternatives at one place; ``None`` marks the one on the path."""

    tails: list[Tail | None]

    @property
    def active(self) -> int:
        return self.tails.index(None)


@dataclass(frozen=True)
class ForkView:
    """A fork as the chat shows it: alternative ``active + 1`` of ``count``, from message ``at``."""

    at: int
    active: int
    count: int
    edited: bool  # the alternatives start with a user message (an edit), not with a reply


@dataclass
class Branches:
    forks: dict[str, Fork] = field(default_factory=dict)

    # -- reading ------------------------------------------------------------------------------
    def forks_on(self, path: Sequence[Any]) -> list[ForkView]:
        """The forks along ``path``, first to last."""
        keys = prefix_keys(path)
        out = []
        for at, key in enumerate(keys):  # a fork at the very end: its new alternative is still to come
            fork = self.forks.get(key)
            if fork is not None:
                edited = message_field(path[at], "role") == "user" if at < len(path) else \
                    any(message_field(tail[0], "role") == "user" for tail in fork.tails if tail)
                out.append(ForkView(at, fork.active, len(fork.tails), edited))
        return out

    def chars(self) -> int:
        """Every character the alternatives not shown carry (what size limits count)."""
        return sum(message_chars(m) for fork in self.forks.values() for tail in fork.tails if tail for m in tail)

    # -- changing (each returns new Branches; the caller puts the new path in the chat) --------
    def keep(self, path: Sequence[Any], at: int) -> Branches:
        """Keep ``path[at:]`` as an alternative at ``at``: the continuation the caller puts there
        next is the newest one. Nothing to keep (``at`` at the end): unchanged."""
        if not 0 <= at < len(path):
            return self
        key = prefix_keys(path[:at])[-1]
        forks = dict(self.forks)
        fork = forks.get(key)
        tails = list(fork.tails) if fork is not None else [None]
        tails[tails.index(None)] = plain_history(path[at:])
        tails.append(None)
        while len(tails) > MAX_ALTERNATIVES:
            tails.pop(0)
        forks[key] = Fork(tails)
        return Branches(forks)

    def switch(self, path: Sequence[Any], at: int, to: int) -> tuple[list[Any], Branches]:
        """Show alternative ``to`` (0-based) of the fork at ``at``: (the new path, the branches)."""
        key = prefix_keys(path[:at])[-1] if 0 <= at <= len(path) else None
        fork = self.forks.get(key) if key else None
        if fork is None:
            raise PromptError("there are no alternatives at that message")
        if not 0 <= to < len(fork.tails):
            raise PromptError(f"there are {len(fork.tails)} alternatives there, not {to + 1}")
        if to == fork.active:
            return list(path), self
        tails = list(fork.tails)
        tails[fork.active] = plain_history(path[at:])
        shown, tails[to] = tails[to], None
        forks = dict(self.forks)
        forks[key] = Fork(tails)
        return [*path[:at], *shown], Branches(forks)

    def pruned(self, path: Sequence[Any]) -> Branches:
        """Only the forks the user can still reach from ``path`` (after a Clear or an import,
        or an alternative dropped past ``MAX_ALTERNATIVES``)."""
        kept: dict[str, Fork] = {}
        todo = [list(path)]
        while todo:
            current = todo.pop()
            keys = prefix_keys(current)
            for at, key in enumerate(keys[:-1]):
                fork = self.forks.get(key)
                if fork is None or key in kept:
                    continue
                kept[key] = fork
                todo += [[*current[:at], *tail] for tail in fork.tails if tail is not None]
        return Branches(kept)

    # -- as data (kept in the browser, exported, imported) --------------------------------------
    def to_data(self) -> dict[str, Any]:
        return {"version": VERSION, "forks": {key: [tail for tail in fork.tails] for key, fork in self.forks.items()}}

    @classmethod
    def from_data(cls, data: Any, normalise: Any = None) -> Branches:
        """Branches from :meth:`to_data`'s shape (None or empty: none); ``normalise`` checks each
        alternative's messages (``core.chat_io.normalise``). A damaged value raises ``PromptError``."""
        if data in (None, {}, []):
            return cls()
        if not isinstance(data, Mapping) or not isinstance(data.get("forks", {}), Mapping):
            raise PromptError("the chat's alternatives must be {\"version\": 1, \"forks\": {...}}")
        if data.get("version", VERSION) != VERSION:
            raise PromptError(f"the chat's alternatives have version {data.get('version')!r}; this playground reads {VERSION}")
        forks = {}
        for key, tails in data.get("forks", {}).items():
            if not isinstance(key, str) or not isinstance(tails, list) or not 2 <= len(tails) <= MAX_ALTERNATIVES \
                    or sum(tail is None for tail in tails) != 1:
                raise PromptError("each fork of the chat's alternatives is a list of 2 to "
                                  f"{MAX_ALTERNATIVES} alternatives, exactly one of them null (the one shown)")
            checked: list[Tail | None] = []
            for tail in tails:
                if tail is not None and not isinstance(tail, list):
                    raise PromptError("an alternative is a list of messages")
                checked.append(None if tail is None else (normalise(tail) if normalise else list(tail)))
            forks[key] = Fork(checked)
        return cls(forks)
