"""The alternatives an edit or a Regenerate leaves (core.branches), without a model: keeping,
switching, nested forks, pruning, the data shape, export / import, and the size limit."""
from __future__ import annotations

import json

import pytest

from core import chat_io
from core.branches import MAX_ALTERNATIVES, Branches, prefix_keys
from core.config import AppConfig
from core.errors import PlaygroundError, PromptError

pytestmark = pytest.mark.timeout(60)


def user(text):
    return {"role": "user", "content": text}


def reply(rid, text):
    return [{"role": "assistant", "content": text, "metadata": {"id": f"answer:{rid}"}},
            {"role": "assistant", "content": "", "metadata": {"id": f"stats:{rid}", "title": "figures"}}]


def texts(path):
    return [m["content"] for m in path if m["content"]]


FIRST = [user("Name a fruit."), *reply("a", "Apple."), user("Another one?"), *reply("b", "Banana.")]


def test_an_edit_keeps_the_old_continuation_and_switching_brings_it_back_intact():
    branches = Branches().keep(FIRST, 0)  # the first message edited
    edited = [user("What color is the sky?"), *reply("c", "The sky is blue.")]
    [fork] = branches.forks_on(edited)
    assert (fork.at, fork.active, fork.count, fork.edited) == (0, 1, 2, True)
    back, branches = branches.switch(edited, 0, 0)
    assert back == FIRST  # every message, ids and notes included
    assert [(f.at, f.active, f.count) for f in branches.forks_on(back)] == [(0, 0, 2)]
    again, branches = branches.switch(back, 0, 1)
    assert again == edited


def test_regenerates_make_alternatives_in_order_and_2_of_3_stays_put():
    path = FIRST
    branches = Branches()
    for n, rid in enumerate(["r1", "r2"]):
        branches = branches.keep(path, 4)  # the reply to "Another one?"
        path = [*path[:4], *reply(rid, f"Cherry {n}.")]
    [fork] = branches.forks_on(path)
    assert (fork.at, fork.active, fork.count, fork.edited) == (4, 2, 3, False)
    seen = []
    for to in (0, 1, 2, 1):
        path, branches = branches.switch(path, 4, to)
        seen.append(texts(path)[-1])
        assert branches.forks_on(path)[0].active == to
    assert seen == ["Banana.", "Cherry 0.", "Cherry 1.", "Cherry 0."]


def test_a_fork_inside_an_alternative_waits_for_it_to_come_back():
    branches = Branches().keep(FIRST, 4)  # regenerate the second reply
    regenerated = [*FIRST[:4], *reply("r", "Cherry.")]
    branches = branches.keep(regenerated, 0)  # then edit the first message
    edited = [user("What color is the sky?"), *reply("c", "Blue.")]
    assert [f.at for f in branches.forks_on(edited)] == [0]  # the deeper fork is not on this path
    back, branches = branches.switch(edited, 0, 0)
    assert back == regenerated
    assert [(f.at, f.active, f.count) for f in branches.forks_on(back)] == [(0, 0, 2), (4, 1, 2)]


def test_a_fork_at_the_end_shows_while_its_new_reply_is_still_to_come():
    branches = Branches().keep(FIRST, 4)
    [fork] = branches.forks_on(FIRST[:4])  # Regenerate has trimmed the chat; the reply streams next
    assert (fork.at, fork.count, fork.edited) == (4, 2, False)


def test_prefix_keys_read_text_role_and_id_only():
    gradio_shaped = [{"role": "user", "content": [{"type": "text", "text": "Name a fruit."}], "metadata": None},
                     {"role": "assistant", "content": "Apple.", "metadata": {"id": "answer:a", "title": "x"}}]
    assert prefix_keys(gradio_shaped) == prefix_keys(FIRST[:2])
    assert prefix_keys([user("Name a fruit!")])[1] != prefix_keys(FIRST[:1])[1]


@pytest.mark.parametrize("at, to, message", [(2, 0, "no alternatives"), (0, 5, "2 alternatives"), (99, 0, "no alternatives")])
def test_a_switch_that_cannot_be_says_why(at, to, message):
    branches = Branches().keep(FIRST, 0)
    with pytest.raises(PromptError, match=message):
        branches.switch([user("x")], at, to)


def test_keeping_nothing_changes_nothing_and_the_oldest_goes_past_the_cap():
    assert Branches().keep(FIRST, len(FIRST)).forks == {}
    branches, path = Branches(), FIRST
    for n in range(MAX_ALTERNATIVES + 3):
        branches = branches.keep(path, 4)
        path = [*path[:4], *reply(f"r{n}", f"Try {n}.")]
    [fork] = branches.forks_on(path)
    assert fork.count == MAX_ALTERNATIVES and fork.active == MAX_ALTERNATIVES - 1
    oldest, _ = branches.switch(path, 4, 0)
    assert texts(oldest)[-1] == "Try 3."  # 36 made: "Banana." and tries 0 to 2 were dropped


def test_pruning_keeps_what_is_reachable_only():
    branches = Branches().keep(FIRST, 4)
    regenerated = [*FIRST[:4], *reply("r", "Cherry.")]
    elsewhere = Branches().keep([user("Say hello."), *reply("h", "Hello!")], 1)
    merged = Branches({**branches.forks, **elsewhere.forks})
    assert len(merged.pruned(regenerated).forks) == 1
    assert merged.pruned([]).forks == {}


@pytest.mark.parametrize("data, message", [
    ({"forks": {"k": [None]}}, "2 to"),
    ({"forks": {"k": [[], []]}}, "exactly one of them null"),
    ({"forks": {"k": ["text", None]}}, "list of messages"),
    ({"version": 9, "forks": {}}, "version 9"),
    ([1, 2], "must be"),
])
def test_damaged_alternatives_are_refused_with_the_reason(data, message):
    with pytest.raises(PromptError, match=message):
        Branches.from_data(data, chat_io.normalise)


def test_export_and_import_keep_the_tree_and_markdown_shows_the_path():
    branches = Branches().keep(FIRST, 0)
    edited = [user("What color is the sky?"), *reply("c", "The sky is blue.")]
    for text in (chat_io.to_json(edited, "tiny-bf16", branches), chat_io.to_markdown(edited, "tiny-bf16", branches)):
        messages, imported = chat_io.parse_tree(text)
        assert messages == chat_io.normalise(edited)
        back, _ = imported.switch(messages, 0, 0)
        assert back == chat_io.normalise(FIRST)
    markdown = chat_io.to_markdown(edited, "tiny-bf16", branches)
    assert "The sky is blue." in markdown.split("<!--")[0] and "Banana." not in markdown.split("<!--")[0]
    assert "branches" not in json.loads(chat_io.to_json(edited))  # none: an export as before
    assert chat_io.parse(chat_io.to_json(edited, None, branches)) == chat_io.normalise(edited)


def test_the_alternatives_are_under_the_size_limit():
    from playground import Playground

    playground = Playground(AppConfig(max_message_chars=50))  # alternatives: at most 2,000 characters
    branches = Branches().keep([user("x"), *reply("a", "y" * 45)], 1)
    playground.check_branches(branches)  # 45 characters and ids: fine
    for n in range(50):
        branches = branches.keep([user("x"), *reply(f"b{n}", "z" * 45)], 1)
    with pytest.raises(PlaygroundError, match="alternatives hold"):
        playground.check_branches(branches)
    big = chat_io.to_json([user("x"), *reply("c", "w")], None, branches)
    with pytest.raises(PlaygroundError, match="alternatives hold|accepts files of at most"):
        playground.read_chat_tree(big)
    playground.close()


def test_the_ui_steps_keep_the_size_limits_and_lose_nothing():
    """Edit, Regenerate's keep and the arrows, called as the page calls them: a message over the
    limit, or alternatives over theirs (the page sends them back: a visitor can forge them), are
    refused with the reason and the chat stays as it was."""
    import gradio as gr

    from playground import Playground
    from ui.branches_view import make_branch_handlers

    playground = Playground(AppConfig(max_message_chars=50, hosted=True))
    steps = make_branch_handlers(playground)
    try:
        edit = gr.EditData(None, {"index": 0, "value": "x" * 51, "previous_value": "Name a fruit."})
        with pytest.warns(UserWarning, match="at most 50"):
            history, data, chosen = steps["edit"](list(FIRST), {}, None, edit)
        assert texts(history) == texts(FIRST) and data == {} and chosen is None

        edit = gr.EditData(None, {"index": 0, "value": "Say hello.", "previous_value": "Name a fruit."})
        history, data, chosen = steps["edit"]([user("Say hello."), *FIRST[1:]], {}, None, edit)
        assert texts(history) == ["Say hello."] and chosen == 0
        back, data = steps["previous"](history, data, 0)
        assert texts(back) == texts(FIRST)

        forged = Branches().keep([user("x"), *reply("a", "y" * 45)], 1)
        for n in range(50):
            forged = forged.keep([user("x"), *reply(f"b{n}", "z" * 45)], 1)
        with pytest.warns(UserWarning, match="alternatives hold"):
            same, kept = steps["previous"]([user("x"), *reply("c", "z")], forged.to_data(), 1)
        assert texts(same) == ["x", "z"] and kept == forged.to_data()
        with pytest.raises(gr.Error, match="alternatives hold"):  # the chain stops: Regenerate does not run
            steps["keep_reply"]([user("x"), *reply("c", "z")], forged.to_data(), None)
    finally:
        playground.close()


def test_the_arrows_wait_for_the_sessions_reply_to_end():
    from types import SimpleNamespace

    from playground import Playground
    from playground.tools.approval import LiveReplies
    from ui.branches_view import make_branch_handlers

    live, playground = LiveReplies(), Playground(AppConfig())
    steps = make_branch_handlers(playground, live)
    branches = Branches().keep(FIRST, 0)
    edited = [user("What color is the sky?"), *reply("c", "Blue.")]
    visitor, other = SimpleNamespace(session_hash="s1"), SimpleNamespace(session_hash="s2")
    try:
        with live.start("s1"):  # this session's reply is streaming
            with pytest.warns(UserWarning, match="still streaming"):
                same, _ = steps["previous"](edited, branches.to_data(), 0, visitor)
            assert same == edited
            back, _ = steps["previous"](edited, branches.to_data(), 0, other)  # another session's chat
            assert texts(back) == texts(FIRST)
        back, _ = steps["previous"](edited, branches.to_data(), 0, visitor)  # it ended
        assert texts(back) == texts(FIRST)
    finally:
        playground.close()
