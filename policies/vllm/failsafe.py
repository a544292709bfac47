"""Contain a runtime policy inside an engine: faults, slowness and hot reload.

:class:`PolicyGuard` wraps a :class:`~controlkit.contract.BatchPolicy` so that nothing the
policy does can stop the engine:

* a policy that **raises** or returns **nonsense** (NaN, negative, absurdly large, the wrong
  type) is a *fault*: the guard returns the fallback limits (the configured static limits, or
  else the last safe ones);
* a policy that is **too slow** (one ``decide`` over ``decide_budget_s``, timed with
  :func:`time.perf_counter`) is a fault too: its late answer is discarded and the guard
  doubles its decision period (``decide_every``, up to ``max_decide_every`` steps), so the
  engine's per-step cost stays bounded;
* an ``admission_order`` must index :attr:`Observation.waiting_prompt_tokens` (else an
  ``invalid`` fault); repeated indices keep their first place; it holds for the step it was
  decided in only, so the fallback limits never carry one;
* a policy **file** that changes on disk is **hot-reloaded**: the new file is built and
  validated first, and a bad one keeps the old policy (a ``reload`` fault).

Each fault kind is logged once (with the running count) through :mod:`logging`, counted in
:attr:`PolicyGuard.faults`, and exported as the Prometheus counter
``controlkit_policy_faults_total{kind=...}`` in the default registry.

This module does not import vLLM; the scheduler hook and any other adapter can use it.

Examples
--------
>>> from controlkit.contract import BatchLimits, Observation
>>> class Broken:
...     def decide(self, observation): raise RuntimeError("boom")
...     def reset(self): pass
>>> guard = PolicyGuard(Broken(), fallback=BatchLimits(8, 2048), max_seqs_ceiling=64,
...                     max_batched_tokens_ceiling=2048, log=False)
>>> guard.decide(Observation(t_s=0.0, num_running=0, num_waiting=0, kv_blocks_used=0,
...                          kv_blocks_total=100))
BatchLimits(max_active_seqs=8, max_batched_tokens=2048, admission_order=(), flags=frozenset(), reject=())
>>> guard.faults["raised"]
1
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlkit.contract import BatchLimits, BatchPolicy, Observation, sanitize_limits
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.registry import PolicyContext, build_policy, resolve_policy_file

__all__ = ["FAULT_KINDS", "FAULT_METRIC", "PolicyGuard", "design_period_s", "fault_counter", "load_guarded_policy"]

logger = logging.getLogger("controlkit.policies.vllm")

#: Fault kinds, the values of the ``kind`` label of :data:`FAULT_METRIC`.
FAULT_KINDS: tuple[str, ...] = ("raised", "invalid", "slow", "reload")
#: Name of the Prometheus counter (as scraped).
FAULT_METRIC = "controlkit_policy_faults_total"

PolicySource = str | Path | PolicyFile | BatchPolicy


def fault_counter() -> Any:
    """Return the process-wide Prometheus counter of policy faults, creating it once.

    The counter lives in ``prometheus_client``'s default registry, so vLLM's ``/metrics``
    endpoint exposes it where the engine core shares the front end's process (the in-process
    engine; with the multiprocess engine core it is visible only with Prometheus
    multiprocess mode).  Returns ``None`` when ``prometheus_client`` is not importable.
    """
    try:
        from prometheus_client import REGISTRY, Counter
    except ImportError:  # pragma: no cover - prometheus-client is a hard dependency
        return None
    existing = REGISTRY._names_to_collectors.get(FAULT_METRIC)  # no public lookup API
    if existing is not None:
        return existing
    try:
        counter = Counter(FAULT_METRIC, "Runtime policy faults contained by the controlkit hook.", ["kind"])
    except ValueError:  # created concurrently in this process
        return REGISTRY._names_to_collectors.get(FAULT_METRIC)
    for kind in FAULT_KINDS:  # expose every kind at 0 so dashboards see the series
        counter.labels(kind=kind)
    return counter


def _is_policy_object(source: object) -> bool:
    return callable(getattr(source, "decide", None)) and callable(getattr(source, "reset", None))


def load_guarded_policy(source: PolicySource, context: PolicyContext) -> tuple[BatchPolicy, Path | None]:
    """Build the policy named by ``source``; return it and the file to watch (or None).

    Raises
    ------
    PolicyError
        The spec or file cannot be read or built (unknown kind, bad parameters, bad JSON).
    """
    policy, path, _ = _load_policy(source, context)
    return policy, path


def design_period_s(policy_file: PolicyFile | None) -> float:
    """Return the decision period a policy file asks for: its ``sample_period_s`` if certified, else 0.

    A designed controller's certificate assumes its sample period; a research policy or a spec
    string carries no certificate and is meant to run every step.
    """
    if policy_file is None or policy_file.certificate is None:
        return 0.0
    return float(policy_file.sample_period_s)


def _load_policy(
    source: PolicySource, context: PolicyContext
) -> tuple[BatchPolicy, Path | None, PolicyFile | None]:
    """Build the policy; return it, the file to watch and the policy file it came from."""
    if _is_policy_object(source):
        return source, None, None  # type: ignore[return-value]  # duck-typed BatchPolicy
    if isinstance(source, (str, Path)):
        text = str(source).strip()
        path = Path(text)
        is_file = text.endswith(".json") or path.is_file()
        if is_file and not path.is_file():
            raise PolicyError(
                f"{text}: policy file not found (set CONTROLKIT_POLICY to a file or a spec string)"
            )
        pf = resolve_policy_file(path if is_file else text)
        return build_policy(pf, context), (path if is_file else None), pf
    if isinstance(source, PolicyFile):
        return build_policy(source, context), None, source
    raise PolicyError(f"policy source must be a path, a spec string or a policy, got {type(source).__name__}")


class PolicyGuard:
    """A fault-containing wrapper around a policy (see the module docstring).

    Parameters
    ----------
    source
        A built policy, a spec string, a path to a ``controlkit.policy/2`` file (watched for
        hot reload) or a :class:`PolicyFile`.
    fallback
        Limits applied until the first good decision and after every fault when
        ``static_fallback`` is False (then the last safe limits are used instead).
    max_seqs_ceiling
        The engine's ceiling for the admission cap (the value it started with).
    max_batched_tokens_ceiling, min_batched_tokens
        The engine's valid range for the per-step token budget.
    context
        Engine facts handed to the policy factory (also used on reload).
    decide_every
        Call the policy every this many steps (>= 1); in between the last limits hold.
    decide_budget_s
        A ``decide`` that takes longer than this (seconds) is a ``slow`` fault.
    max_decide_every
        Upper bound of the decision period after slow faults.
    decide_period_s
        Minimum time between decisions (seconds of the guard's clock); 0 decides at every
        due step.  ``"auto"``: the policy file's design period (:func:`design_period_s`: the
        ``sample_period_s`` of a certified controller, else 0), followed again on every hot
        reload.
    reload_check_s
        How often (seconds of the guard's clock) to check the policy file's mtime.
    static_fallback
        On a fault apply ``fallback`` (True) or the last safe limits (False, the default).
    clock
        Monotonic clock (seconds); injectable for tests.
    log
        Log the first fault of each kind (True) or stay silent (False, doctests).
    """

    def __init__(
        self,
        source: PolicySource,
        *,
        fallback: BatchLimits,
        max_seqs_ceiling: int,
        max_batched_tokens_ceiling: int | None = None,
        min_batched_tokens: int = 1,
        context: PolicyContext | None = None,
        decide_every: int = 1,
        decide_budget_s: float = 0.005,
        max_decide_every: int = 64,
        decide_period_s: float | str = 0.0,
        reload_check_s: float = 1.0,
        static_fallback: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        log: bool = True,
    ) -> None:
        if not (isinstance(decide_every, int) and decide_every >= 1):
            raise PolicyError(f"decide_every must be an integer >= 1, got {decide_every!r}")
        if not (math.isfinite(decide_budget_s) and decide_budget_s > 0):
            raise PolicyError(f"decide_budget_s must be a finite number > 0 seconds, got {decide_budget_s!r}")
        self.context = context or PolicyContext(max_num_seqs=max_seqs_ceiling)
        self.policy, self.path, policy_file = _load_policy(source, self.context)
        self.fallback = fallback
        self.max_seqs_ceiling = max_seqs_ceiling
        self.max_batched_tokens_ceiling = max_batched_tokens_ceiling
        self.min_batched_tokens = min_batched_tokens
        self.decide_every = decide_every
        self.decide_budget_s = float(decide_budget_s)
        self.max_decide_every = max(decide_every, max_decide_every)
        self.reload_check_s = reload_check_s
        self.static_fallback = static_fallback
        self.clock = clock
        self.log = log
        self.faults: Counter[str] = Counter()
        self.reloads = 0
        self.last_safe = fallback
        self.last_fault = ""
        self._steps = 0
        #: Duration of the last ``decide`` call (seconds of ``clock``), for overhead accounting.
        self.last_decide_s = 0.0
        #: The decision period follows the policy file (``decide_period_s="auto"``).
        self.auto_period = decide_period_s == "auto"
        if self.auto_period:
            decide_period_s = design_period_s(policy_file)
        if not (isinstance(decide_period_s, (int, float)) and math.isfinite(decide_period_s) and decide_period_s >= 0):
            raise PolicyError(
                f"decide_period_s must be 'auto' or a finite number >= 0 seconds, got {decide_period_s!r}"
            )
        self.decide_period_s = float(decide_period_s)
        self._next_due_s = -math.inf
        self._metric = fault_counter()
        self._mtime_ns = self._stat_mtime()
        self._next_check_s = clock() + reload_check_s
        self._bad_mtime_ns = -1

    @property
    def total_faults(self) -> int:
        """All faults contained so far, of every kind."""
        return sum(self.faults.values())

    def _stat_mtime(self) -> int:
        if self.path is None:
            return -1
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return -1

    def _fault(self, kind: str, detail: str) -> BatchLimits:
        self.faults[kind] += 1
        self.last_fault = f"{kind}: {detail}"
        if self._metric is not None:
            self._metric.labels(kind=kind).inc()
        if self.log and self.faults[kind] == 1:
            logger.warning(
                "controlkit: policy fault #%d (%s): %s; the engine keeps running with %s limits. "
                "Further %r faults are counted, not logged (metric %s).",
                self.total_faults, kind, detail, "static" if self.static_fallback else "last safe",
                kind, FAULT_METRIC,
            )
        return self.fallback if self.static_fallback else self.last_safe

    def maybe_reload(self) -> bool:
        """Reload the policy file if its mtime changed; return True if a new policy is in force."""
        if self.path is None:
            return False
        now = self.clock()
        if now < self._next_check_s:
            return False
        self._next_check_s = now + self.reload_check_s
        mtime = self._stat_mtime()
        if mtime in (self._mtime_ns, self._bad_mtime_ns) or mtime < 0:
            return False
        try:
            policy, _, policy_file = _load_policy(self.path, self.context)
        except Exception as exc:  # a bad file must never stop the engine
            self._bad_mtime_ns = mtime
            self._fault("reload", f"{self.path}: {exc}; keeping the previous policy")
            return False
        self.policy, self._mtime_ns = policy, mtime
        self.reloads += 1
        if self.auto_period:
            self.decide_period_s = design_period_s(policy_file)
        if self.log:
            logger.info("controlkit: reloaded policy from %s (reload #%d, decision period %.3g s)",
                        self.path, self.reloads, self.decide_period_s)
        return True

    def due(self) -> bool:
        """Count one engine step; return True when the policy should decide at this step.

        A decision is due every ``decide_every`` steps and, with ``decide_period_s``, only
        once that much time (of the guard's clock) has passed since the last decision.
        Adapters call this *before* building an observation, so skipped steps cost nothing.
        """
        self._steps += 1
        if (self._steps - 1) % self.decide_every:
            return False
        if self.decide_period_s > 0.0:
            now = self.clock()
            if now < self._next_due_s - 1e-9:  # tolerate float rounding of the clock
                return False
            self._next_due_s = now + self.decide_period_s
        return True

    def decide(self, observation: Observation) -> BatchLimits:
        """Ask the policy for limits if a decision is due (:meth:`due`), else hold the last ones.

        Never raises; always returns limits safe to apply.
        """
        if not self.due():
            return self.last_safe
        return self.decide_now(observation)

    def decide_now(self, observation: Observation) -> BatchLimits:
        """Ask the policy now (no step gating); never raises."""
        if self.path is not None:
            self.maybe_reload()
        start = self.clock()
        try:
            raw = self.policy.decide(observation)
        except Exception as exc:  # contain everything the policy may raise
            return self._fault("raised", f"{type(exc).__name__}: {exc}")
        elapsed = self.last_decide_s = self.clock() - start
        if elapsed > self.decide_budget_s:
            self.decide_every = min(self.max_decide_every, 2 * self.decide_every)
            return self._fault(
                "slow",
                f"decide took {elapsed * 1e3:.2f} ms > budget {self.decide_budget_s * 1e3:.2f} ms; "
                f"result discarded, deciding every {self.decide_every} steps now",
            )
        if type(raw) is BatchLimits and not raw.admission_order and not raw.reject:  # fast path: clean, in range
            cap, tokens = raw.max_active_seqs, raw.max_batched_tokens
            ceiling = self.max_batched_tokens_ceiling
            if type(cap) is int and 1 <= cap <= self.max_seqs_ceiling and (
                tokens is None
                or (type(tokens) is int and self.min_batched_tokens <= tokens
                    and (ceiling is None or tokens <= ceiling))
            ):
                if tokens is None:
                    last = self.last_safe
                    if cap == last.max_active_seqs and raw.flags == last.flags:
                        return last  # unchanged: no new object, the adapter can skip applying it
                    raw = BatchLimits(cap, last.max_batched_tokens, (), frozenset(raw.flags))
                self.last_safe = raw
                return raw
        checked = sanitize_limits(
            raw,
            last_safe=self.fallback if self.static_fallback else self.last_safe,
            max_seqs_ceiling=self.max_seqs_ceiling,
            min_batched_tokens=self.min_batched_tokens,
            max_batched_tokens_ceiling=self.max_batched_tokens_ceiling,
            num_waiting=len(observation.waiting_prompt_tokens),
        )
        if checked.fault:
            return self._fault("invalid", checked.fault)
        limits = checked.limits
        tokens = limits.max_batched_tokens
        if tokens is None:
            tokens = self.last_safe.max_batched_tokens
        order = limits.admission_order
        if order or limits.reject:
            # an order (or a rejection) is for this step's queue only: the fallback never carries one
            self.last_safe = BatchLimits(limits.max_active_seqs, tokens, (), limits.flags)
            if len(set(order)) != len(order):  # a repeated index: keep its first place
                order = tuple(dict.fromkeys(order))
            return BatchLimits(limits.max_active_seqs, tokens, order, limits.flags, limits.reject)
        if limits.max_batched_tokens is None:
            limits = BatchLimits(limits.max_active_seqs, tokens, (), limits.flags)
        self.last_safe = limits
        return limits

    def summary(self) -> str:
        """One line: faults by kind, reloads and the decision period."""
        kinds = ", ".join(f"{k}={self.faults[k]}" for k in FAULT_KINDS if self.faults[k]) or "none"
        return f"faults: {kinds}; reloads: {self.reloads}; deciding every {self.decide_every} step(s)"
