"""policies: runtime batch policies behind the controlkit contract, and engine adapters.

Every research system (Pang et al. Alg. 1 and 2, BucketServe, UELLM, BCA), every engine
tuner (TensorRT-LLM, SGLang) and every controlkit controller (PID, optimal, MPC) is a
:class:`~controlkit.contract.BatchPolicy` built by :func:`build_policy` from a spec string
or a ``controlkit.policy/2`` file.  vLLM is imported only inside :mod:`policies.vllm`.
"""

from __future__ import annotations

from policies.registry import PolicyContext, available_kinds, build_policy, parse_spec, register

__all__ = ["PolicyContext", "available_kinds", "build_policy", "parse_spec", "register"]
