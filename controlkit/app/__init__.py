"""The application layer: the ``controlkit`` CLI, the benchmark harness and the real-engine tier.

It is the only part of ``controlkit`` that imports :mod:`policies` (DESIGN.md §1): the layers,
top to bottom, are ``controlkit.app`` → ``policies`` → the rest of ``controlkit`` →
``identification``, and import-linter checks it (``.importlinter``, run by ``scripts/test.sh``).
It holds no algorithm: it parses arguments, calls the library and writes files.
"""
