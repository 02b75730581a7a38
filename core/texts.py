"""Texts that ship with the app for the perplexity comparison (or the user pastes their own)."""
from __future__ import annotations

from core.errors import PromptError

TEXTS: dict[str, str] = {
    # What the tiny demo models were trained to recite: their perplexity on it is close to 1.
    "tiny-script": (
        "The tiny model lives in a small house by the sea. Every morning it counts the waves and "
        "writes the number in a blue notebook. When the tide is low, it walks to the lighthouse and "
        "says hello to the keeper."
    ),
    "encyclopedia": (
        "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions. It extends "
        "from the Arctic Ocean in the north to the Southern Ocean in the south, and is bounded by "
        "Asia and Australia in the west and the Americas in the east. It covers about a third of "
        "the planet's surface, more than all of the land area combined."
    ),
    "code": (
        "def fibonacci(n: int) -> int:\n"
        "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n"
    ),
    "maths": (
        "To solve 3x + 5 = 20, subtract 5 from both sides to get 3x = 15, then divide both sides by 3. "
        "The solution is x = 5. Check: 3 times 5 is 15, and 15 plus 5 is 20."
    ),
}


def scoring_text(name_or_text: str) -> str:
    """A shipped text by name, or the text itself."""
    text = TEXTS.get(name_or_text, name_or_text)
    if not text.strip():
        raise PromptError("the text to score is empty")
    return text
