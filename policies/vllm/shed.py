"""Load shedding in the vLLM hook: reject waiting requests through vLLM's own abort path.

A policy sheds load by returning :attr:`controlkit.contract.BatchLimits.reject`: indices
into the observation's waiting list (the head of vLLM's ``waiting`` queue, in queue order,
see :mod:`policies.vllm.observe`).  :class:`LoadShedder` turns those indices into request
ids *before* the admission order moves the queue, then finishes the requests with
``Scheduler.finish_requests(ids, RequestStatus.FINISHED_ABORTED)`` -- the call vLLM's
engine core makes when a client disconnects -- so their blocks and slots are freed by vLLM
itself.  Because the abort starts inside the scheduler rather than at the frontend, the
client must still be told: at the next ``update_from_output()`` each shed request gets an
``EngineCoreOutput`` with no tokens and vLLM's own finish reason (``abort``), exactly as
vLLM reports the requests it fails itself (``FINISHED_ERROR``).

Shed requests are counted in :attr:`LoadShedder.total` and exposed in the Prometheus text
format by :meth:`LoadShedder.exposition` (``controlkit_requests_shed_total``).

This module imports vLLM lazily (at the first shed request).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

__all__ = ["SHED_METRIC", "LoadShedder"]

logger = logging.getLogger("controlkit.policies.vllm")

#: Name of the Prometheus counter of requests shed by the policy.
SHED_METRIC = "controlkit_requests_shed_total"


class LoadShedder:
    """Rejects the waiting requests a policy names, through vLLM's abort path, and counts them."""

    def __init__(self) -> None:
        #: Requests shed since the engine started (a Prometheus counter).
        self.total = 0
        #: Faults of the abort path itself (vLLM API drift, a bad index); shedding is then off.
        self.faults = 0
        self._ids: list[str] = []
        self._to_report: list[Any] = []

    def _fault(self, where: str, exc: Exception) -> None:
        """Contain a failure of the abort path: log it once, stop shedding, keep the engine up."""
        self.faults += 1
        self._ids, self._to_report = [], []
        if self.faults == 1:
            logger.error("controlkit: load shedding failed in %s (%s: %s); shedding is off, the engine goes on",
                         where, type(exc).__name__, str(exc)[:200])

    def select(self, scheduler: Any, indices: tuple[int, ...]) -> None:
        """Remember the ids of the listed waiting requests at ``indices`` (call before reordering)."""
        if not indices or self.faults:
            return
        try:
            head = list(itertools.islice(scheduler.waiting, max(indices) + 1))
            self._ids.extend(head[i].request_id for i in indices if 0 <= i < len(head))
        except Exception as exc:  # never raise into the engine
            self._fault("select", exc)

    def apply(self, scheduler: Any) -> int:
        """Abort the selected requests with ``FINISHED_ABORTED``; return how many were shed."""
        if not self._ids:
            return 0
        ids, self._ids = self._ids, []
        try:
            from vllm.v1.request import RequestStatus

            aborted = list(scheduler.finish_requests(ids, RequestStatus.FINISHED_ABORTED) or [])
        except Exception as exc:  # never raise into the engine
            self._fault("finish_requests", exc)
            return 0
        self._to_report.extend(aborted)
        self.total += len(aborted)
        if aborted and self.total == len(aborted):
            logger.info("controlkit: the policy sheds load (first %d request(s) rejected)", len(aborted))
        return len(aborted)

    def report(self, outputs: Any) -> Any:
        """Add a finished, token-less output for every shed request to ``update_from_output``'s result."""
        if not self._to_report or not isinstance(outputs, dict):
            return outputs
        try:
            return self._report(outputs)
        except Exception as exc:  # never raise into the engine
            self._fault("report", exc)
            return outputs

    def _report(self, outputs: dict[Any, Any]) -> dict[Any, Any]:
        from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs

        outs = outputs
        for req in self._to_report:
            eco = outs.get(req.client_index)
            if eco is None:
                eco = outs[req.client_index] = EngineCoreOutputs(outputs=[])
            eco.outputs.append(
                EngineCoreOutput(
                    request_id=req.request_id,
                    new_token_ids=[],
                    finish_reason=req.get_finished_reason(),
                    events=req.take_events(),
                    trace_headers=req.trace_headers,
                )
            )
        self._to_report = []
        return outs

    def exposition(self) -> str:
        """Return the counter in the Prometheus text exposition format.

        Examples
        --------
        >>> print(LoadShedder().exposition())
        # HELP controlkit_requests_shed_total Requests rejected by the controlkit policy (load shedding).
        # TYPE controlkit_requests_shed_total counter
        controlkit_requests_shed_total 0
        """
        return (
            f"# HELP {SHED_METRIC} Requests rejected by the controlkit policy (load shedding).\n"
            f"# TYPE {SHED_METRIC} counter\n"
            f"{SHED_METRIC} {self.total}"
        )
