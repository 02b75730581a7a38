"""The project's own Qwen3 chat template (ChatML, thinking switch, tools).

Used by the tiny demo models and as the fallback for checkpoints and GGUF files that carry no
template. It must render exactly what the template real Qwen3 checkpoints ship renders, for every
conversation (``tests/test_qwen3_template.py`` compares the two on many shapes), so that a model
sees the same prompt whichever template it runs on. Its rules:

- ChatML turns ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a first ``system`` message is the
  system turn;
- ``tools``: the system turn (after the system prompt, if any) holds a ``# Tools`` block with one
  JSON schema per line inside ``<tools></tools>`` and the ``<tool_call>`` instructions;
- assistant turns: the reasoning (``reasoning_content``, or the part of the content before
  ``</think>``) is kept only for turns after the last real user message (the current tool loop),
  and always for a final assistant message; earlier turns keep their answer only.
  ``tool_calls`` are written as ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``
  blocks, on a new line unless the content is empty;
- ``tool`` messages become one user turn of ``<tool_response>\\n...\\n</tool_response>`` pieces
  per run of consecutive results;
- ``add_generation_prompt`` opens the assistant turn; ``enable_thinking`` false adds an empty
  ``<think>\\n\\n</think>\\n\\n`` block so that the model writes no reasoning.

Tool schemas and dict arguments go through the engine's ``tojson``: transformers writes keys in
order and non-ASCII as is, plain Jinja2 sorts keys and escapes ``<>&'``.
"""

QWEN3_CHAT_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- '\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{#- The last real user message: a user turn that is not just a tool response. #}
{%- set state = namespace(searching=true, last_query=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- if state.searching and message.role == 'user' and not (message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set state.searching = false %}
        {%- set state.last_query = messages|length - 1 - loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- set reasoning = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in message.content %}
            {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
            {%- set reasoning = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > state.last_query and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if content or not loop.first %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""
