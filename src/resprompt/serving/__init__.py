"""Serving many prompts on one backbone (issue 14).

- ``config``: the validated settings (``RegistryOptions``, ``BatchPolicy``, ``ServeConfig``).
- ``prompts``: one prompt folder -> a ``LoadedPrompt`` (model with its own head, task, kind).
- ``mixed``: one base-model forward over rows of several encoder prompts, each read by its own head.
- ``classify``: the classification handler (record -> row, rows -> label + per-label scores).
- ``decoder_scoring``: decoder classification, each label's verbalisation scored by mean token log-likelihood.
- ``generate``: the generation handler (record -> prompted ids -> text, one prompt per row).
- ``registry``: ``PromptRegistry``, the backbone and its prompts; dispatch by task kind.
- ``batcher``: dynamic batching of concurrent requests into mixed forwards (asyncio + one thread).
- ``schemas`` / ``metrics`` / ``middleware`` / ``server``: the HTTP API (FastAPI) and ``resprompt serve``.

Nothing here is imported by the core; ``cli.cmd_serve`` imports ``server`` lazily.
"""
