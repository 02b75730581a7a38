"""The project's own Qwen3-style chat template (ChatML + thinking switches).

Used by the tiny demo models and as the fallback template for checkpoints/GGUF files that carry
none. It follows Qwen3's rules (see QWEN3.md):
- ChatML turns: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``;
- ``enable_thinking`` (default true): when false, the generation prompt ends with an empty
  ``<think>\\n\\n</think>\\n\\n`` block so that the model writes no reasoning;
- messages are rendered exactly as given: dropping earlier turns' reasoning is the job of the
  shared chat code (``core.chat``), so a test on the tiny models fails if that code regresses.
"""

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
