"""Arrival sequences and an OpenAI-client load generator for a live vLLM server.

:func:`poisson_sequence` makes a seeded arrival sequence (Poisson arrivals, uniform prompt and
output lengths) and :func:`write_sequence` writes it as a request file that
``controlkit simulate --workload FILE`` replays.  :func:`drive` sends the same sequence to a
server with the ``openai`` client (streaming completions, token-id prompts, ``ignore_eos`` so
that every request produces exactly its output length) and returns the measured
:class:`~controlkit.sim.metrics.RequestOutcomes`: the same record type, and the same metric
definitions (:func:`~controlkit.sim.metrics.compute_metrics`), as the simulator.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controlkit.sim.metrics import SLO, RequestOutcomes, SimMetrics, compute_metrics

__all__ = ["ArrivalSequence", "drive", "poisson_sequence", "real_metrics", "write_requests", "write_sequence"]


@dataclass(frozen=True)
class ArrivalSequence:
    """Requests to send: arrival times (s, from the start), prompt and output lengths (tokens)."""

    arrival_s: np.ndarray[Any, np.dtype[np.float64]]
    prompt_tokens: np.ndarray[Any, np.dtype[np.int64]]
    output_tokens: np.ndarray[Any, np.dtype[np.int64]]
    seed: int

    def __len__(self) -> int:
        return len(self.arrival_s)


def poisson_sequence(
    rate_req_s: float, num_requests: int, *, prompt: tuple[int, int] = (32, 256),
    output: tuple[int, int] = (16, 128), seed: int = 0,
) -> ArrivalSequence:
    """Poisson arrivals at ``rate_req_s`` with lengths uniform in the closed ranges given.

    >>> seq = poisson_sequence(10.0, 5, seed=1)
    >>> len(seq), bool(np.all(np.diff(seq.arrival_s) >= 0))
    (5, True)
    """
    if not (rate_req_s > 0 and num_requests >= 1):
        raise ValueError(f"need rate_req_s > 0 and num_requests >= 1, got {rate_req_s}, {num_requests}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_req_s, num_requests)
    gaps[0] = 0.0
    return ArrivalSequence(
        np.cumsum(gaps), rng.integers(prompt[0], prompt[1] + 1, num_requests),
        rng.integers(output[0], output[1] + 1, num_requests), seed,
    )


def write_sequence(seq: ArrivalSequence, path: Path) -> Path:
    """Write ``seq`` as a request file (JSONL: ``arrival_s, prompt_tokens, output_tokens``)."""
    with open(path, "w") as fh:
        for a, p, o in zip(seq.arrival_s, seq.prompt_tokens, seq.output_tokens, strict=True):
            fh.write(json.dumps({"arrival_s": float(a), "prompt_tokens": int(p), "output_tokens": int(o)}) + "\n")
    return path


def write_requests(out: RequestOutcomes, path: Path) -> Path:
    """Write measured outcomes as ``controlkit.requests/1`` records (NaN times as null)."""
    frame = out.frame()
    with open(path, "w") as fh:
        fh.write(json.dumps({"schema": "controlkit.requests/1", "source": "controlkit.app.realengine"}) + "\n")
        for row in frame.to_dict(orient="records"):
            fh.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in row.items()}) + "\n")
    return path


async def _one(client: Any, model: str, prompt: list[int], max_tokens: int, t0: float,
               send_at_s: float, timeout_s: float) -> tuple[float, float, float, int]:
    await asyncio.sleep(max(0.0, t0 + send_at_s - time.monotonic()))
    sent = time.monotonic() - t0
    first = math.nan
    n = 0
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, stream=True, temperature=0.0,
            extra_body={"ignore_eos": True, "min_tokens": max_tokens}, timeout=timeout_s,
        )
        async for chunk in stream:
            if chunk.choices and math.isnan(first):
                first = time.monotonic() - t0
            n += 1
    except Exception:
        return sent, math.nan, math.nan, 0
    return sent, first, time.monotonic() - t0, n


async def _drive(base_url: str, model: str, seq: ArrivalSequence, vocab: int, timeout_s: float) -> RequestOutcomes:
    from openai import AsyncOpenAI

    rng = np.random.default_rng(seq.seed + 7919)
    prompts = [[int(t) for t in rng.integers(3, vocab, int(p))] for p in seq.prompt_tokens]
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0) as client:
        t0 = time.monotonic()
        rows = await asyncio.gather(*[
            _one(client, model, pr, int(o), t0, float(a), timeout_s)
            for pr, o, a in zip(prompts, seq.output_tokens, seq.arrival_s, strict=True)
        ])
    arr = np.array(rows, dtype=float).reshape(len(rows), 4)
    return RequestOutcomes(
        arrival_s=arr[:, 0], first_token_s=arr[:, 1], finish_s=arr[:, 2],
        prompt_tokens=seq.prompt_tokens.astype(np.int64), output_tokens=seq.output_tokens.astype(np.int64),
        num_preemptions=np.zeros(len(rows), dtype=np.int64),
    )


def drive(base_url: str, model: str, seq: ArrivalSequence, *, vocab: int = 512,
          timeout_s: float = 120.0) -> RequestOutcomes:
    """Send ``seq`` to the server at ``base_url`` on its schedule; return what each request saw.

    Times are seconds from the first send.  A request that fails or times out has NaN
    ``first_token_s`` and ``finish_s`` (counted unfinished by the metrics).
    """
    return asyncio.run(_drive(base_url, model, seq, vocab, timeout_s))


def real_metrics(out: RequestOutcomes, slo: SLO, *, num_preemptions: int = 0) -> SimMetrics:
    """Summarise a real run as the simulator does (:func:`compute_metrics`); duration: first send to last finish."""
    end = float(np.nanmax(out.finish_s)) if np.isfinite(out.finish_s).any() else 0.0
    return compute_metrics(out, slo, sim_time_s=end - float(np.min(out.arrival_s)), kv_used=[], kv_dt_s=[],
                           kv_blocks_total=1, counters={"steps": 0, "preemptions": num_preemptions})
