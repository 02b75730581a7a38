"""The script the tiny models are trained to follow, as data that tests import.

Every case is a chat (rendered with the project's Qwen3 chat template) plus the exact completion
the model must write.  ``reasoning`` and ``answer`` are what a correct reasoning parser extracts:
the reasoning without the ``<think>\\n`` / ``\\n</think>`` wrapping, the answer without the
leading blank line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EOS = "<|im_end|>"

# The model is trained to repeat this pattern without ever writing <|im_end|> (for Stop tests).
ENDLESS_UNIT = " la"
ENDLESS_TRAIN_REPEATS = 160


@dataclass(frozen=True)
class ScriptedCase:
    name: str
    messages: list[dict] = field(hash=False)
    enable_thinking: bool
    reasoning: str  # "" when the model writes no (or an empty) think block
    answer: str
    # "full": "<think>\n{reasoning}\n</think>\n\n{answer}";  "empty_think": "<think>\n\n</think>\n\n{answer}"
    # (soft /no_think);  "answer_only": the template already closed the think block (hard switch).
    think_block: str = "full"
    ends: bool = True  # False: the model never writes <|im_end|> ("endless")

    @property
    def completion(self) -> str:
        """The generated text as decoded with skip_special_tokens=True (no <|im_end|>)."""
        if self.think_block == "full":
            return f"{THINK_OPEN}\n{self.reasoning}\n{THINK_CLOSE}\n\n{self.answer}"
        if self.think_block == "empty_think":
            return f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{self.answer}"
        return self.answer

    @property
    def target(self) -> str:
        """The training target: the completion plus <|im_end|> when the model stops."""
        return self.completion + (EOS if self.ends else "")


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


ADD_Q = "What is 2+3?"
ADD_REASONING = "Two plus three makes five."
ADD_ANSWER = "The answer is 5."

SKY_Q = "What color is the sky?"
SKY_REASONING = "On a clear day the sky looks blue."
SKY_ANSWER = "The sky is blue."

FRUIT_Q = "Name a fruit."
FRUIT_REASONING = "I like apples."
FRUIT_ANSWER = "Apple."

ENDLESS_Q = "Sing la la la forever."

CASES: list[ScriptedCase] = [
    ScriptedCase("think", [_user(ADD_Q)], True, ADD_REASONING, ADD_ANSWER),
    ScriptedCase("no_think_hard", [_user(ADD_Q)], False, "", ADD_ANSWER, think_block="answer_only"),
    ScriptedCase("no_think_soft", [_user(ADD_Q + " /no_think")], True, "", ADD_ANSWER,
                 think_block="empty_think"),
    ScriptedCase("another", [_user(SKY_Q)], True, SKY_REASONING, SKY_ANSWER),
    ScriptedCase("another_no_think", [_user(SKY_Q + " /no_think")], True, "", SKY_ANSWER,
                 think_block="empty_think"),
    ScriptedCase("another_no_think_hard", [_user(SKY_Q)], False, "", SKY_ANSWER,
                 think_block="answer_only"),
    # First turn of the multi-turn chat: its reasoning must NOT be sent back in the history.
    ScriptedCase("fruit", [_user(FRUIT_Q)], True, FRUIT_REASONING, FRUIT_ANSWER),
    ScriptedCase(
        "multi_turn",
        [_user(FRUIT_Q), _assistant(FRUIT_ANSWER), _user("Another one?")],
        True, "They want one more fruit.", "Banana.",
    ),
    ScriptedCase("endless", [_user(ENDLESS_Q)], False, "", ENDLESS_UNIT.strip() + ENDLESS_UNIT * (
        ENDLESS_TRAIN_REPEATS - 1), think_block="answer_only", ends=False),
]

# Contrast example (trained, but not a "follow the script" case): the same chat with the first
# turn's reasoning leaked into the history gets a different, telltale answer.
LEAKED_HISTORY_CASE = ScriptedCase(
    "multi_turn_leaked",
    [
        _user(FRUIT_Q),
        _assistant(f"{THINK_OPEN}\n{FRUIT_REASONING}\n{THINK_CLOSE}\n\n{FRUIT_ANSWER}"),
        _user("Another one?"),
    ],
    True, "Old reasoning is in the history.", "Reasoning leaked into the history.",
)



def _follow_up(name: str, *turns: str) -> ScriptedCase:
    """A later turn: earlier questions with their scripted answers (as the history rules send them
    back: answers only), then ``turns[-1]``, answered with its own scripted reasoning and answer."""
    replies = {ADD_Q: (ADD_REASONING, ADD_ANSWER), SKY_Q: (SKY_REASONING, SKY_ANSWER),
               FRUIT_Q: (FRUIT_REASONING, FRUIT_ANSWER), "Another one?": ("They want one more fruit.", "Banana.")}
    messages = [m for q in turns[:-1] for m in (_user(q), _assistant(replies[q][1]))] + [_user(turns[-1])]
    return ScriptedCase(name, messages, True, *replies[turns[-1]])


# The same questions later in a conversation: whatever came before, the last question gets its own
# reply (what the multi-session load test and the fault tests ask).
FOLLOW_UP_CASES: list[ScriptedCase] = [
    _follow_up("add_then_sky", ADD_Q, SKY_Q),
    _follow_up("sky_then_fruit", SKY_Q, FRUIT_Q),
    _follow_up("fruit_then_add", FRUIT_Q, ADD_Q),
    _follow_up("add_sky_then_fruit", ADD_Q, SKY_Q, FRUIT_Q),
    _follow_up("sky_fruit_then_add", SKY_Q, FRUIT_Q, ADD_Q),
    _follow_up("fruit_add_then_sky", FRUIT_Q, ADD_Q, SKY_Q),
    _follow_up("fruit_another_then_sky", FRUIT_Q, "Another one?", SKY_Q),
]

TRAINING_CASES: list[ScriptedCase] = [*CASES, *FOLLOW_UP_CASES, LEAKED_HISTORY_CASE]

CASES_BY_NAME: dict[str, ScriptedCase] = {c.name: c for c in TRAINING_CASES}

# Plain text the model memorises (no chat template), e.g. for perplexity checks.
SCRIPTED_TEXT = (
    "The tiny model lives in a small house by the sea. Every morning it counts the waves and "
    "writes the number in a blue notebook. When the tide is low, it walks to the lighthouse "
    "and says hello to the keeper."
)


def case(name: str) -> ScriptedCase:
    """Look a case (including the leaked-history contrast case) up by name."""
    return CASES_BY_NAME[name]
