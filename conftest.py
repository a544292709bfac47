"""Root pytest configuration: which package modules are collected for doctests."""

from __future__ import annotations

# Running the module would execute the CLI.
collect_ignore = ["controlkit/app/cli/__main__.py"]
# The vLLM adapter's modules import vLLM (and torch), whose own import-time deprecation
# warnings would be errors here; they are exercised by tests/policies/vllm instead, which
# import vLLM with those warnings filtered and skip cleanly without the optional extra.
collect_ignore_glob = ["policies/vllm/*"]
