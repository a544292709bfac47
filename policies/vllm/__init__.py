"""The vLLM 0.33 adapter: a scheduler hook that runs any controlkit policy inside vLLM.

Three ways in (see ``docs/vllm.md``):

* ``vllm serve MODEL --scheduler-cls policies.vllm.make_scheduler`` with
  ``CONTROLKIT_POLICY=policy.json`` (or ``LLM(..., scheduler_cls="policies.vllm.make_scheduler")``);
* no flag: ``CONTROLKIT_ENABLE=1`` activates the ``vllm.general_plugins`` entry point
  (:func:`policies.vllm.plugin.register`); an explicit ``--scheduler-cls`` still wins;
* a static config exported by ``controlkit export`` (no hook at all).

Importing this package does not import vLLM: :func:`make_scheduler` loads
:mod:`policies.vllm.scheduler` (which does) on its first call.
"""

from __future__ import annotations

from typing import Any

from policies.vllm.config import HookConfig
from policies.vllm.failsafe import FAULT_METRIC, PolicyGuard
from policies.vllm.steplog import STEP_LOG_SCHEMA, StepLogWriter

__all__ = ["FAULT_METRIC", "STEP_LOG_SCHEMA", "HookConfig", "PolicyGuard", "StepLogWriter", "make_scheduler"]


def make_scheduler(*args: Any, **kwargs: Any) -> Any:
    """Build vLLM's hooked scheduler (sync or async, matching the engine); see :mod:`.scheduler`.

    This is the value for ``--scheduler-cls`` / ``LLM(scheduler_cls=...)``:
    ``"policies.vllm.make_scheduler"``.
    """
    from policies.vllm.scheduler import make_scheduler as _make

    return _make(*args, **kwargs)
