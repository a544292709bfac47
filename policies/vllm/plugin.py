"""The ``vllm.general_plugins`` entry point: install the hook without ``--scheduler-cls``.

vLLM calls :func:`register` in every process it starts (front end, engine core, workers),
possibly more than once.  With ``CONTROLKIT_ENABLE=1`` it wraps
``SchedulerConfig.get_scheduler_cls`` so that an engine whose user chose *no* scheduler
class gets :func:`policies.vllm.make_scheduler`; an explicit ``--scheduler-cls`` (or
``LLM(scheduler_cls=...)``) still wins.  Without the variable, or when ``VLLM_PLUGINS``
does not list ``controlkit``, it does nothing.

This wraps a vLLM method, which is version-fragile: the pinned vLLM is 0.33.0, and the
explicit ``--scheduler-cls`` route is the primary one.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ENABLE_ENV", "register"]

#: Environment variable that turns the plugin on (value ``1``).
ENABLE_ENV = "CONTROLKIT_ENABLE"
_MARK = "_controlkit_hook"


def register() -> None:
    """Install the hook as vLLM's default scheduler when ``CONTROLKIT_ENABLE=1`` (idempotent)."""
    if os.environ.get(ENABLE_ENV) != "1":
        return
    from vllm.config.scheduler import SchedulerConfig

    original = SchedulerConfig.get_scheduler_cls
    if getattr(original, _MARK, False):
        return

    def get_scheduler_cls(self: Any) -> Any:
        if self.scheduler_cls is None:  # the user did not choose one
            from policies.vllm import make_scheduler

            return make_scheduler
        return original(self)

    setattr(get_scheduler_cls, _MARK, True)
    get_scheduler_cls.__wrapped__ = original  # type: ignore[attr-defined]  # for unregister()
    SchedulerConfig.get_scheduler_cls = get_scheduler_cls


def unregister() -> None:
    """Undo :func:`register` (tests)."""
    try:
        from vllm.config.scheduler import SchedulerConfig
    except ImportError:  # pragma: no cover - nothing was registered without vLLM
        return
    current = SchedulerConfig.get_scheduler_cls
    if getattr(current, _MARK, False):
        SchedulerConfig.get_scheduler_cls = current.__wrapped__
