"""vLLM 0.33 schedulers that ask a controlkit policy for their batch limits every step.

Use :func:`make_scheduler` (``--scheduler-cls policies.vllm.make_scheduler``); it returns a
:class:`ControlledAsyncScheduler` when vLLM runs with async scheduling (the GPU default)
and a :class:`ControlledScheduler` otherwise.  Each step the hook

1. builds an :class:`~controlkit.contract.Observation` from the scheduler's state
   (:class:`~policies.vllm.observe.StepObserver`);
2. asks the policy through a :class:`~policies.vllm.failsafe.PolicyGuard` (faults, slow
   decisions and bad reloads are contained);
3. applies the limits: ``max_num_active_reqs`` (the admission cap, clamped to
   ``[1, the value the scheduler started with]``) and ``max_num_scheduled_tokens`` (the
   token budget, within ``[min(start value, max_num_seqs), start value]``, and left alone
   when chunked prefill is off, since a smaller budget would then starve long prompts);
4. reorders vLLM's FCFS waiting queue when the policy returns an ``admission_order``
   (:meth:`HookRuntime.apply_admission_order`; ignored with priority scheduling);
5. after ``update_from_output()`` closes the step, appends a step record to the step log.

The waiting lists of the observation (``waiting_prompt_tokens``, ``waiting_age_s``) cost a
pass over up to 32 requests; a policy whose class sets ``needs_waiting_details = False``
gets them empty (policies without the attribute get them; a policy that leaves them out
must not return an ``admission_order``, which would index an empty list and be a fault).

This module imports vLLM; :mod:`policies.vllm` itself does not.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from controlkit.contract import BatchLimits
from policies.registry import PolicyContext
from policies.vllm.admission import reorder_head
from policies.vllm.config import HookConfig
from policies.vllm.failsafe import PolicyGuard
from policies.vllm.observe import StepObserver
from policies.vllm.shed import LoadShedder
from policies.vllm.steplog import StepLogWriter

__all__ = ["ControlledAsyncScheduler", "ControlledScheduler", "HookRuntime", "make_scheduler"]

logger = logging.getLogger("controlkit.policies.vllm")


class HookRuntime:
    """The per-scheduler state of the hook: policy guard, observer and step log.

    Parameters
    ----------
    scheduler
        The vLLM scheduler being controlled (already constructed).
    config
        The hook settings; None reads them from ``os.environ`` and the engine's
        ``additional_config``.

    Raises
    ------
    PolicyError
        The configured policy cannot be read or built (the engine does not start).
    """

    def __init__(self, scheduler: Any, config: HookConfig | None = None) -> None:
        vcfg = scheduler.vllm_config
        if config is None:
            config = HookConfig.from_sources(os.environ, vcfg.additional_config)
        self.config = config
        sched_cfg = scheduler.scheduler_config
        self.cap_ceiling = int(scheduler.max_num_active_reqs)
        self.tokens_ceiling = int(scheduler.max_num_scheduled_tokens)
        self.chunked_prefill = bool(sched_cfg.enable_chunked_prefill)
        self.min_tokens = (
            min(self.tokens_ceiling, int(scheduler.max_num_running_reqs)) if self.chunked_prefill
            else self.tokens_ceiling
        )
        block_size = int(scheduler.cache_config.block_size)
        pool = scheduler.kv_cache_manager.block_pool
        self.context = PolicyContext(
            kv_blocks_total=int(pool.num_gpu_blocks) - 1,
            block_size=block_size,
            max_num_seqs=self.cap_ceiling,
            max_batched_tokens=self.tokens_ceiling,
            max_model_len=int(scheduler.max_model_len),
        )
        self.limits = BatchLimits(self.cap_ceiling, self.tokens_ceiling)
        self.guard: PolicyGuard | None = None
        if config.policy is not None:
            fallback = self.limits
            if config.fallback_max_seqs is not None:
                fallback = BatchLimits(min(config.fallback_max_seqs, self.cap_ceiling), self.tokens_ceiling)
            self.guard = PolicyGuard(
                config.policy,
                fallback=fallback,
                max_seqs_ceiling=self.cap_ceiling,
                max_batched_tokens_ceiling=self.tokens_ceiling,
                min_batched_tokens=self.min_tokens,
                context=self.context,
                decide_every=config.decide_every,
                decide_period_s=config.decide_period_s,
                decide_budget_s=config.decide_budget_s,
                reload_check_s=config.reload_check_s,
                static_fallback=config.fallback_max_seqs is not None,
            )
            logger.info("controlkit: hook active with policy %s (cap ceiling %d, token budget %d)",
                        type(self.guard.policy).__name__, self.cap_ceiling, self.tokens_ceiling)
        # Context tokens cost a pass over the running requests; pay it only for the step log.
        self.observer = StepObserver(
            block_size, context_tokens=bool(config.step_log), records=bool(config.step_log)
        )
        self.step_log: StepLogWriter | None = None
        if config.step_log:
            self.step_log = StepLogWriter(
                config.step_log,
                header={
                    "source": "vllm-hook",
                    "scheduler": type(scheduler).__name__,
                    "t0_unix_s": self.observer.t0_unix_s,
                    "block_size": block_size,
                    "kv_blocks_total": self.context.kv_blocks_total,
                    "max_num_seqs": int(scheduler.max_num_running_reqs),
                    "max_num_active_seqs": self.cap_ceiling,
                    "max_num_batched_tokens": self.tokens_ceiling,
                    "max_model_len": self.context.max_model_len,
                    "model": str(getattr(vcfg.model_config, "model", "")),
                    "async_scheduling": bool(sched_cfg.async_scheduling),
                },
                buffer_steps=config.step_log_buffer,
                max_bytes=config.step_log_max_bytes,
                backups=config.step_log_backups,
            )
        self._t_entry_s = 0.0
        self._policy: object = None
        self._waiting_details = True
        #: Admission orders applied to / ignored by vLLM's waiting queue.
        self.orders_applied = 0
        self.orders_ignored = 0
        #: Load shedding (``BatchLimits.reject``) through vLLM's abort path.
        self.shedder = LoadShedder()

    def before_schedule(self, scheduler: Any) -> None:
        """Decide and apply this step's limits (top of ``schedule()``)."""
        self._t_entry_s = now_s = self.observer.clock()
        guard = self.guard
        if guard is None or not guard.due():
            return
        policy = guard.policy
        if policy is not self._policy:  # first decision, or a hot reload swapped the policy
            self._policy = policy
            self._waiting_details = bool(getattr(policy, "needs_waiting_details", True))
        limits = self.limits
        obs = self.observer.observe(
            scheduler, limits.max_active_seqs, limits.max_batched_tokens or 0,
            waiting_details=self._waiting_details, now_s=now_s,
        )
        new = guard.decide_now(obs)
        if new is not limits:
            self.limits = new
            scheduler.max_num_active_reqs = new.max_active_seqs
            if self.chunked_prefill and new.max_batched_tokens is not None:
                scheduler.max_num_scheduled_tokens = new.max_batched_tokens
            self.shedder.select(scheduler, new.reject)  # ids before the order moves the queue
            if new.admission_order:
                self.apply_admission_order(scheduler.waiting, new.admission_order)
            self.shedder.apply(scheduler)

    def apply_admission_order(self, queue: Any, order: tuple[int, ...]) -> bool:
        """Move the listed waiting requests to the head of ``queue`` in ``order``; True if moved.

        ``order`` holds distinct indices into this step's observation's
        ``waiting_prompt_tokens``, i.e. into the first :data:`~controlkit.contract.WAITING_LIST_LIMIT`
        requests of vLLM's FCFS ``waiting`` queue (already validated by the guard).  Those
        requests go first, in that order; every other request keeps its relative order, and
        none is added or lost.  Costs O(largest index), and nothing for an identity order.
        The requests in ``kv_holding_waiting`` are untouched (vLLM drains them first anyway).

        Only vLLM's FCFS queue (a ``deque``) is reordered: with ``--scheduling-policy
        priority`` the queue is a heap ordered by (priority, arrival), and the order is ignored
        (logged once, counted in :attr:`orders_ignored`).
        """
        if not isinstance(queue, deque):
            if any(i != j for j, i in enumerate(order)):
                self.orders_ignored += 1
                if self.orders_ignored == 1:
                    logger.info("controlkit: admission_order ignored: vLLM's %s keeps its own order "
                                "(only the FCFS queue is reordered)", type(queue).__name__)
            return False
        try:
            moved = reorder_head(queue, order)
        except ValueError:  # the guard validated it against this very queue: cannot happen
            self.orders_ignored += 1
            return False
        self.orders_applied += moved
        return moved

    def after_schedule(self, scheduler: Any, output: Any) -> None:
        """Snapshot the step just scheduled."""
        self.observer.on_schedule(
            scheduler, output, self._t_entry_s, scheduler.max_num_active_reqs,
            scheduler.max_num_scheduled_tokens,
        )

    def after_update(self, scheduler: Any, output: Any) -> None:
        """Close the step and log it."""
        record = self.observer.on_update(scheduler, output)
        if record is not None and self.step_log is not None:
            self.step_log.write(record)
            if not scheduler.running and not scheduler.waiting:
                # Drained: write now.  vLLM 0.32's CPU engine core shuts its executor down
                # first and is often SIGKILLed before it reaches ``Scheduler.shutdown()``.
                self.step_log.flush()

    def close(self) -> None:
        """Flush the step log and log the fault summary."""
        if self.step_log is not None:
            self.step_log.close()
        if self.guard is not None and self.guard.total_faults:
            logger.warning("controlkit: %s", self.guard.summary())


def _pop_config(kwargs: dict[str, Any]) -> HookConfig | None:
    cfg = kwargs.pop("controlkit", None)
    if cfg is not None and not isinstance(cfg, HookConfig):
        raise TypeError(f"controlkit= must be a HookConfig, got {type(cfg).__name__}")
    return cfg


class _Hooked(Scheduler):  # type: ignore[misc]  # vLLM is untyped at our boundary
    """The controlkit hook around vLLM's scheduler calls; mixed into both concrete classes.

    In ``ControlledAsyncScheduler`` the method resolution order is this class, then vLLM's
    ``AsyncScheduler``, then ``Scheduler``, so ``super()`` reaches the async scheduler there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = _pop_config(kwargs)
        super().__init__(*args, **kwargs)
        self.controlkit = HookRuntime(self, config)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        """Apply the policy's limits, then schedule as vLLM does."""
        hook = self.controlkit
        hook.before_schedule(self)
        out = super().schedule(*args, **kwargs)
        hook.after_schedule(self, out)
        return out

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        """Update as vLLM does, then record the step."""
        outs = super().update_from_output(scheduler_output, model_runner_output)
        self.controlkit.after_update(self, scheduler_output)
        return self.controlkit.shedder.report(outs)

    def shutdown(self) -> None:
        """Flush the step log, then shut down as vLLM does."""
        self.controlkit.close()
        super().shutdown()


class ControlledScheduler(_Hooked):
    """vLLM's synchronous ``Scheduler`` with the controlkit hook.

    Accepts vLLM's constructor arguments plus an optional ``controlkit=HookConfig(...)``
    (tests, in-process use); otherwise the settings come from the environment.
    """


class ControlledAsyncScheduler(_Hooked, AsyncScheduler):  # type: ignore[misc]  # vLLM is untyped at our boundary
    """vLLM's ``AsyncScheduler`` (depth-2 batch queue) with the controlkit hook."""


def make_scheduler(*args: Any, **kwargs: Any) -> Any:
    """Build the hooked scheduler that matches the engine's mode (the ``scheduler_cls`` value).

    vLLM calls this with its scheduler keyword arguments; with ``async_scheduling`` on it
    returns a :class:`ControlledAsyncScheduler`, else a :class:`ControlledScheduler`.
    """
    cfg = kwargs["vllm_config"].scheduler_config
    cls = ControlledAsyncScheduler if cfg.async_scheduling else ControlledScheduler
    return cls(*args, **kwargs)

