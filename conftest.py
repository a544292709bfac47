"""Root pytest configuration: which package modules are collected for doctests."""

from __future__ import annotations

import importlib.util

# Running the module would execute the CLI.
collect_ignore = ["controlkit/cli/__main__.py"]
# The vLLM adapter imports vLLM; without the optional extra its doctests are skipped cleanly.
if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["policies/vllm/*"]
