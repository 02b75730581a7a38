"""Not losing anything: chat export (JSON, Markdown) and import back through the API; broken
files refused with a clear error; a chat restored after a reload marks a reply cut short.

(The browser side, localStorage across a real reload, is in test_browser_session.py.)
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from core import chat_io
from tinymodels.script import FRUIT_ANSWER, FRUIT_Q, FRUIT_REASONING, case

ANOTHER = case("multi_turn")
ANOTHER_Q = ANOTHER.messages[-1]["content"]
THINKING = (0.6, 0.95, 20, 0.0, 0.0)


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def title(message: dict) -> str | None:
    return (message.get("metadata") or {}).get("title")


def shape(history: list[dict]) -> list[tuple]:
    """What must survive a round trip: role, text, note title, panel status."""
    return [(m["role"], text(m), title(m), (m.get("metadata") or {}).get("status")) for m in history]


@pytest.fixture()
def client(ui_server, tmp_path):
    from gradio_client import Client

    return Client(ui_server.url, verbose=False, download_files=str(tmp_path / "downloads"))


def chat(client, message, history=()):
    return client.predict(message, list(history), "", True, *THINKING, 200, 0, 0, "tiny-bf16", 1.0,
                          api_name="/chat")


@pytest.fixture()
def history(client):
    """One finished turn with thinking: the user's message, a reasoning panel, the answer, stats."""
    final = chat(client, FRUIT_Q)
    assert [m["role"] for m in final] == ["user", "assistant", "assistant", "assistant"]
    return final


def export(client, history) -> tuple[str, str]:
    """The JSON and the Markdown export's text."""
    return tuple(client.predict(history, "tiny-bf16", fmt, api_name="/chat_export") for fmt in ("json", "markdown"))


def import_bytes(client, data: bytes, current=()):
    """Import a file's raw bytes (as a data URL, the way an uploaded file would come)."""
    url = "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")
    return client.predict(url, list(current), api_name="/chat_import")


# -- round trips through the API ------------------------------------------------------------
def test_export_json_and_markdown_then_import_both_back(client, history):
    exported_json, markdown = export(client, history)
    data = json.loads(exported_json)
    assert data["format"] == "qwen3-playground-chat" and data["version"] == 2 and data["model"] == "tiny-bf16"
    assert data["messages"][0] == {"role": "user", "content": FRUIT_Q}
    assert data["messages"][1]["content"] == FRUIT_REASONING
    assert data["messages"][1]["metadata"]["title"].startswith("Thought for")
    assert "# Qwen3 Playground chat" in markdown and f"**User**\n\n{FRUIT_Q}" in markdown
    assert f"> {FRUIT_REASONING}" in markdown and FRUIT_ANSWER in markdown  # reasoning as a quote
    for exported in (exported_json, markdown):
        restored = client.predict(exported, [{"role": "user", "content": "something else"}], api_name="/chat_import")
        assert shape(restored) == shape(history)
        assert shape(import_bytes(client, exported.encode("utf-8"))) == shape(history)  # as raw bytes too


def test_export_and_import_through_the_ui_events(ui_server, history, tmp_path):
    """The buttons' handlers: files to download, a file to upload."""
    from ui.chat_files import export_chat, import_chat

    json_file, md_file = export_chat(history, "tiny-bf16")
    assert json_file.visible and md_file.visible
    for value in (json_file.value, md_file.value):
        path = Path(value["path"] if isinstance(value, dict) else value)
        assert path.suffix in (".json", ".md")
        assert shape(import_chat(str(path), [])[0]) == shape(history)


def test_an_imported_chat_goes_on(client, history):
    exported_json, _ = export(client, history)
    restored = client.predict(exported_json, [], api_name="/chat_import")
    final = chat(client, ANOTHER_Q, restored)
    # the tiny model answers "Banana." only if the imported history reached it as it was
    # (and without the old reasoning: it would answer "Reasoning leaked into the history.")
    assert [text(m) for m in final if m["role"] == "assistant" and not title(m)] == [FRUIT_ANSWER, ANOTHER.answer]


def test_exporting_an_empty_chat_says_so(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Nothing to export"):
        client.predict([], "tiny-bf16", "json", api_name="/chat_export")


# -- broken files: a clear error, the current chat unchanged --------------------------------
@pytest.mark.parametrize("name, data, words", [
    ("latin1.json", '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"), "not UTF-8 text"),
    ("garbage.json", b"\xff\xfe\x00\x81binary", "not UTF-8 text"),
    ("cut.json", b'{"messages": [{"role": "user", "content": "hi"', "not valid JSON"),
    ("trailing.json", b'{"messages": []} extra', "not valid JSON"),
    ("role.json", b'{"messages": [{"role": "hacker", "content": "hi"}]}', "unknown role 'hacker'"),
    ("content.json", b'{"messages": [{"role": "user", "content": 42}]}', "content must be text"),
    ("other.json", b'{"format": "qwen3-playground-comparison", "entries": []}', "not a chat export"),
    ("future.json", b'{"format": "qwen3-playground-chat", "version": 99, "messages": []}', "version 99"),
    ("notes.md", b"# My notes\n\nNothing exported here.", "neither a JSON chat export nor a Markdown export"),
    ("damaged.md", b"# chat\n<!-- qwen3-playground-chat v1 base64:!!!notbase64 -->", "neither"),
    ("damaged2.md", b"# chat\n<!-- qwen3-playground-chat v1 base64:AAAA -->", "damaged"),
    ("empty.json", b"", "empty"),
])
def test_a_broken_file_is_refused_and_the_chat_kept(client, history, tmp_path, name, data, words):
    from gradio_client.exceptions import AppError

    from ui.chat_files import import_chat

    with pytest.raises(AppError) as error:
        import_bytes(client, data, current=history)
    assert words in str(error.value) and "current chat is unchanged" in str(error.value)
    path = tmp_path / name  # the Import button's handler says the same
    path.write_bytes(data)
    with pytest.raises(Exception, match="current chat is unchanged") as ui_error:
        import_chat(str(path), history)
    assert words in str(ui_error.value)
    # the session goes on with its chat
    final = chat(client, ANOTHER_Q, history)
    assert [text(m) for m in final if m["role"] == "assistant" and not title(m)][-1] == ANOTHER.answer


# -- the pieces, without a server -------------------------------------------------------------
def test_parse_accepts_a_bare_list_and_finishes_pending_panels():
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "half a thou", "metadata": {"title": "Thinking…", "status": "pending"}}]
    parsed = chat_io.parse(json.dumps(messages).encode())
    assert parsed[0] == {"role": "user", "content": "hi"}
    # a version-1 file (no ids): the panel gets its id from its title, once, on import
    assert parsed[1]["metadata"]["id"].startswith("reasoning:")
    assert {k: v for k, v in parsed[1]["metadata"].items() if k != "id"} == {"title": "Thought (interrupted)",
                                                                               "status": "done"}


def test_a_file_over_the_size_limit_is_refused_unread(monkeypatch):
    monkeypatch.setattr(chat_io, "MAX_IMPORT_BYTES", 100)
    with pytest.raises(chat_io.ChatFileError, match="at most 100"):
        chat_io.parse(b"[" + b" " * 200 + b"]")


def test_markdown_round_trip_survives_tricky_text():
    tricky = "--> <!-- qwen3-playground-chat v1 base64:AAAA --> **Assistant** ```\n> quoted"
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": tricky},
               {"role": "assistant", "content": "ok"}]
    assert chat_io.parse(chat_io.to_markdown(history)) == history


def test_restore_marks_a_reply_cut_by_a_reload():
    from ui.chat_files import restore as restore_both

    def restore(saved):
        return restore_both(saved)[0]

    from ui.formatting import INTERRUPTED_TITLE

    finished = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "metadata": {"id": "answer:r1"}},
                {"role": "assistant", "content": "", "metadata": {"id": "stats:r1", "title": "3 prompt · 1 completion"}}]
    assert restore(finished) == finished
    cut = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hel"}]
    assert title(restore(cut)[-1]) == INTERRUPTED_TITLE and text(restore(cut)[1]) == "hel"
    thinking = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hmm", "metadata": {"title": "Thinking…", "status": "pending"}}]
    restored = restore(thinking)
    assert restored[1]["metadata"]["status"] == "done" and title(restored[-1]) == INTERRUPTED_TITLE
    assert title(restore([{"role": "user", "content": "hi"}])[-1]) == INTERRUPTED_TITLE  # no reply yet
    assert restore([{"role": "robot"}]) == [] and restore(None) == []  # unreadable storage: a fresh chat
