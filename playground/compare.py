"""Run one prompt on several models, one after another (fair timing) or at the same time.

Yields :class:`ColumnEvent` s tagged with the entry's index, so a UI can stream every column and
a CLI can collect them. One entry failing (to load, or mid-stream) only ends that column.

With a toolbox, every entry runs its own tool loop on its leased model, with the same toolbox
(it holds no per-call state; calls of entries running at the same time may run together). Calls
run without approval. Each call the model writes is followed by a :class:`CallCheck`: whether it
parsed, names an offered tool and has arguments that fit the tool's schema.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ContextManager

from backends.bandwidth import memory_bandwidth
from backends.base import Backend, StopSignal
from backends.host_memory import process_resident_bytes
from backends.pool import PoolKey
from backends.registry import backend_class
from core.catalog import ModelSpec
from core.compare import CallCheck, Comparison, EntryResult
from core.errors import PlaygroundError
from core.events import ChatEvent, ProgressFn
from core.request import ChatRequest, LoadOptions
from core.settings import GenerationSettings
from core.speed_bound import WeightProfile
from core.tools import AnyCall, Toolbox, ToolCall, ToolCallError, ToolSpec

from playground.service import ModelReady, guard_loops
from playground.tools.loop import run_tool_loop
from playground.tools.toolbox import argument_problem

if TYPE_CHECKING:
    from playground.service import Playground

# (spec, options, progress) -> a context manager lending a loaded backend
Acquire = Callable[[ModelSpec, LoadOptions, ProgressFn | None], ContextManager[Backend]]


@dataclass(frozen=True)
class EntrySpec:
    """One column: a model reference, an optional backend override and its load options."""

    model: str
    backend: str | None = None
    options: LoadOptions = LoadOptions()
    label: str | None = None


@dataclass(frozen=True)
class EntryMemory:
    """After an entry's reply: what its model reads per token, what the process gained from before
    its load (None: not separable, see ``core.speed_bound``), and the device's bandwidth."""

    profile: WeightProfile | None
    process_gain: int | None
    bandwidth_bytes_per_s: float | None
    bandwidth_device: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.to_dict() if self.profile else None, "process_gain": self.process_gain,
                "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s, "bandwidth_device": self.bandwidth_device}


@dataclass(frozen=True)
class ColumnEvent:
    index: int
    kind: str  # "loaded" | "event" | "memory" | "error" | "done"
    payload: Any = None  # ModelReady | ChatEvent | CallCheck | EntryMemory | error message | None


def new_comparison(entries: list[EntrySpec], prompt: str, settings: GenerationSettings, thinking: bool,
                   system_prompt: str = "") -> Comparison:
    comparison = Comparison(prompt=prompt, settings=settings.to_dict(), thinking=thinking, system_prompt=system_prompt)
    for i, entry in enumerate(entries):
        comparison.entries.append(EntryResult(label=entry.label or f"{i + 1}. {entry.model}", model=entry.model,
                                              backend=entry.backend or "", yarn_factor=entry.options.yarn_factor))
    return comparison


def add_published(playground: Playground, comparison: Comparison, entries: list[EntrySpec]) -> None:
    """Give each entry what sources published for its checkpoint in the comparison's mode
    (``core.published``; an empty list when none did, or when the model does not resolve).
    Call it again when the mode changes (a follow-up with thinking switched)."""
    for entry, result in zip(entries, comparison.entries):
        try:
            spec = playground.resolve(entry.model, entry.backend)
        except PlaygroundError:
            result.published = []
            continue
        result.published = [match.to_dict() for match in playground.published.matching(spec, comparison.thinking)]


def check_call(call: AnyCall, specs: Mapping[str, ToolSpec]) -> CallCheck:
    """Is ``call`` valid: did it parse, does it name one of ``specs``, do its arguments fit?"""
    if isinstance(call, ToolCallError):
        return CallCheck(call.id, call.name, None, f"did not parse: {call.message}", call.raw)
    spec = specs.get(call.name)
    if spec is None:
        return CallCheck(call.id, call.name, call.arguments, f"unknown tool {call.name!r}")
    problem = argument_problem(spec, call.arguments)
    return CallCheck(call.id, call.name, call.arguments, f"bad arguments: {problem}" if problem else None)


def _reply(backend: Backend, request: ChatRequest, stop: threading.Event) -> Iterator[ChatEvent | CallCheck]:
    """The entry's reply: one generation, or with tools the whole tool loop with every call checked.
    With ``request.loop_guard`` each generation is watched (as in ``Playground.chat``): a column
    that repeats itself stops on its own, the others go on."""
    tripped = threading.Event()  # this entry's loop guard
    if request.loop_guard:
        stop = StopSignal(stop, tripped)

    def generate(turn: ChatRequest) -> Iterator[ChatEvent]:
        stream = backend.stream_chat(turn, stop)
        return guard_loops(stream, tripped) if turn.loop_guard else stream

    if request.toolbox is None:
        yield from generate(request)
        return
    specs = {spec.name: spec for spec in request.toolbox.specs()}
    stream = run_tool_loop(generate, request, stop)
    try:
        for event in stream:
            yield event
            if isinstance(event, (ToolCall, ToolCallError)):
                yield check_call(event, specs)
    finally:
        stream.close()


def _run_entry(playground: Playground, index: int, entry: EntrySpec, history: list[dict[str, Any]],
               settings: GenerationSettings, thinking: bool, system_prompt: str, acquire: Acquire,
               stop: threading.Event, load_lock: threading.Lock,
               toolbox: Toolbox | None, loop_guard: bool = True, measure_gain: bool = False) -> Iterator[ColumnEvent]:
    try:
        playground.check_conversation(history, system_prompt)  # the size limits, whoever runs it
        spec = playground.resolve(entry.model, entry.backend)
        request = ChatRequest.build(spec, entry.options, history, settings, thinking, system_prompt or None, toolbox,
                                    loop_guard=loop_guard)
        with contextlib.ExitStack() as lease:
            with load_lock:  # the clock starts once it is this entry's turn to load
                if stop.is_set():
                    raise PlaygroundError("stopped before it started")
                backend_class(spec.backend)  # import the library before the clock starts: load time is the model's
                resident = process_resident_bytes()
                started = time.perf_counter()
                backend = lease.enter_context(acquire(spec, entry.options, None))
            info = playground.describe(backend)
            yield ColumnEvent(index, "loaded", ModelReady(info, time.perf_counter() - started))
            stream = _reply(backend, request, stop)
            try:
                for event in stream:
                    yield ColumnEvent(index, "event", event)
            finally:
                stream.close()
            if not stop.is_set():  # after Stop, the column ends now
                yield ColumnEvent(index, "memory", _entry_memory(backend, info.device,
                                                                 resident if measure_gain else None))
    except Exception as exc:  # one column's failure must not end the others; worded for who sees it
        yield ColumnEvent(index, "error", playground.error_text(exc))
    yield ColumnEvent(index, "done")


def _entry_memory(backend: Backend, device: str, resident_before: int | None) -> EntryMemory:
    """Measured after the reply (the bandwidth, measured once per machine, never slows a column).
    The process gain is RAM only: on a GPU it is not the model's, so it is left out."""
    profile = backend.weight_profile()
    on_cpu, on_cuda = device == "cpu", device.startswith("cuda") or device == "gpu"
    if profile is None or not (on_cpu or on_cuda):  # a server, or a device we cannot measure
        return EntryMemory(profile, None, None, None)
    gain = process_resident_bytes() - resident_before if resident_before is not None and on_cpu else None
    try:
        bandwidth = memory_bandwidth("cpu" if on_cpu else "cuda")
    except Exception:  # noqa: BLE001 - no bound is better than a failed column after a good reply
        return EntryMemory(profile, gain, None, None)
    return EntryMemory(profile, gain, bandwidth.bytes_per_s, bandwidth.device)


def concurrency_plan(playground: Playground, entries: list[EntrySpec], concurrent: bool) -> tuple[bool, str]:
    """Whether ``entries`` run at the same time on the shared pool, and why not when they cannot:
    at the same time, every different model (or YaRN factor) holds a pool slot, and the pool
    never holds more than ``--max-models``: past it, the entries run one after another."""
    if not concurrent:
        return False, ""
    keys = set()
    for entry in entries:
        try:
            keys.add(PoolKey.of(playground.resolve(entry.model, entry.backend), entry.options.validate()))
        except PlaygroundError:  # fails in its own column
            continue
    slots = playground.pool.max_models
    if len(keys) <= slots:
        return True, ""
    return False, (f"one after another: at the same time they would hold {len(keys)} models in memory and "
                   f"this playground keeps at most {slots}")


def run_comparison(playground: Playground, entries: list[EntrySpec], histories: list[list[dict[str, Any]]],
                   settings: GenerationSettings, thinking: bool, *, system_prompt: str = "",
                   acquire: Acquire | None = None, concurrent: bool = False,
                   stop: threading.Event | None = None, toolbox: Toolbox | None = None,
                   loop_guard: bool = True) -> Iterator[ColumnEvent]:
    """Stream every entry's reply to its own conversation (``histories[i]`` ends with the prompt).

    Models come from ``acquire`` (default: the playground's shared pool, and ``concurrent`` is
    then subject to :func:`concurrency_plan`; the CLI loads each entry on its own with
    ``playground.load_fresh``). Each entry's request is checked by the
    same rules as a chat (``ChatRequest.build``): an entry that always or never thinks follows
    its model. ``toolbox``: the tools every entry may call (each runs its own tool loop).
    ``loop_guard``: each entry's reply stops on its own once it repeats itself ("repeating").
    """
    stop = stop or threading.Event()
    # what the process gains per entry is that entry's only when each loads its own model, in turn
    fresh_loads = acquire is not None
    if acquire is None:
        concurrent = concurrency_plan(playground, entries, concurrent)[0]
        acquire = playground.lease
    # The entries load one at a time, also "at the same time" (generation is what runs together):
    # first-time library imports from two threads at once (transformers' lazy modules, needed by
    # one entry's load while another's imports them) fail with "cannot import name ..."; and
    # loads mostly compete for the same disk and memory anyway.
    load_lock = threading.Lock()

    def run(i: int, entry: EntrySpec) -> Iterator[ColumnEvent]:
        return _run_entry(playground, i, entry, histories[i], settings, thinking, system_prompt, acquire, stop,
                          load_lock, toolbox, loop_guard, measure_gain=fresh_loads and not concurrent)

    try:
        if not concurrent:
            for i, entry in enumerate(entries):
                if stop.is_set():
                    yield ColumnEvent(i, "error", "stopped before it started")
                    yield ColumnEvent(i, "done")
                    continue
                yield from run(i, entry)
            return
        events: queue.Queue[ColumnEvent] = queue.Queue()

        def worker(i: int, entry: EntrySpec) -> None:
            for event in run(i, entry):
                events.put(event)

        threads = [threading.Thread(target=worker, args=(i, e), name=f"compare-{i}", daemon=True)
                   for i, e in enumerate(entries)]
        for thread in threads:
            thread.start()
        remaining = len(threads)
        while remaining:
            event = events.get()
            remaining -= event.kind == "done"
            yield event
    finally:  # Stop, or the consumer went away: every column's generation ends
        stop.set()


def collect(comparison: Comparison, events: Iterator[ColumnEvent],
            on_event: Callable[[ColumnEvent], None] | None = None) -> Comparison:
    """Fold column events into ``comparison`` (its entries' replies, figures and errors)."""
    for event in events:
        entry = comparison.entries[event.index]
        if event.kind == "loaded":
            entry.info, entry.load_s = event.payload.info.to_dict(), event.payload.load_s
            entry.backend = event.payload.info.backend
        elif event.kind == "event":
            entry.add(event.payload)
        elif event.kind == "memory":
            entry.memory = event.payload.to_dict()
        elif event.kind == "error":
            entry.error, entry.stop_reason = event.payload, "error"
        if on_event:
            on_event(event)
    return comparison

