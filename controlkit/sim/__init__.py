"""Closed-loop simulator of a vLLM-style continuous-batching engine (DESIGN.md §6)."""
