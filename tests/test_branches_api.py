"""Continue and the alternatives through the Gradio API: /continue_reply finishes a reply cut by
max_new_tokens; /chat_export keeps the alternatives and /chat_import_tree gives them back."""
from __future__ import annotations

import json

import pytest

from core.branches import Branches
from core.messages import content_text, kind_of
from tinymodels.script import case

pytestmark = pytest.mark.timeout(300)

SKY = case("another")
THINKING = (0.6, 0.95, 20, 0.0, 0.0)  # temperature, top_p, top_k, min_p, presence_penalty


@pytest.fixture()
def client(ui_server, tmp_path):
    from gradio_client import Client

    return Client(ui_server.url, verbose=False, download_files=str(tmp_path / "downloads"))


def parts(history):
    return {kind_of(m): content_text(m["content"]) for m in history if kind_of(m) in ("reasoning", "answer")}


def test_continue_reply_finishes_a_reply_cut_by_max_new_tokens(client):
    cut = client.predict(SKY.messages[-1]["content"], [], "", True, *THINKING, 6, 7, 0, "tiny-bf16", 1.0,
                         api_name="/chat")
    assert cut[-1]["metadata"]["id"].endswith(":length") and parts(cut)["reasoning"] != SKY.reasoning
    done = client.predict(cut, "", True, *THINKING, 200, 7, 0, "tiny-bf16", 1.0, api_name="/continue_reply")
    assert parts(done) == {"reasoning": SKY.reasoning, "answer": SKY.answer}
    assert done[-1]["metadata"]["id"] == cut[-1]["metadata"]["id"].removesuffix(":length")
    # a reply that ended by itself is left as it is
    again = client.predict(done, "", True, *THINKING, 200, 7, 0, "tiny-bf16", 1.0, api_name="/continue_reply")
    assert again == done


def test_the_alternatives_go_through_export_and_import(client):
    first = client.predict(SKY.messages[-1]["content"], [], "", True, *THINKING, 200, 7, 0, "tiny-bf16", 1.0,
                           api_name="/chat")
    branches = Branches().keep(first, 1)  # as Regenerate keeps the first reply
    second = [*first[:1], {"role": "assistant", "content": "Another try.", "metadata": {"id": "answer:zz"}}]
    text = client.predict(second, "tiny-bf16", "json", branches.to_data(), api_name="/chat_export")
    assert len(json.loads(text)["branches"]["forks"]) == 1
    tree = client.predict(text, None, api_name="/chat_import_tree")
    back, _ = Branches.from_data(tree["branches"]).switch(tree["messages"], 1, 0)
    assert parts(back) == {"reasoning": SKY.reasoning, "answer": SKY.answer}
    assert client.predict(text, None, api_name="/chat_import") == tree["messages"]
    with pytest.raises(Exception, match="exactly one of them null"):
        client.predict(second, "", "json", {"version": 1, "forks": {"k": [[], []]}}, api_name="/chat_export")
