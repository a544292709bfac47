"""Workloads: request arrival times and lengths that drive the simulator.

A :class:`Workload` is three aligned numpy arrays (arrival seconds, prompt tokens, output
tokens), sorted by arrival.  :func:`load_workload` builds one by name or from a file:

* ``azure-conv``, ``azure-code``: the Azure LLM inference traces of 2023 (arrival from
  ``TIMESTAMP``, relative to the first request);
* ``mooncake``: the Mooncake conversation trace (``timestamp`` in ms);
* ``sharegpt[:<arrivals>]``: ShareGPT lengths (Llama-2 tokenizer) resampled with ``seed``,
  arrivals ``poisson:<rate>`` (default ``poisson:1``), ``gamma:<rate>:<cv>`` or ``all-at-once``;
* ``step:<rate1>:<rate2>:<t_switch_s>`` and ``ramp:<rate0>:<rate1>:<duration_s>``: Poisson
  arrivals with a piecewise constant or linearly ramped rate, ShareGPT lengths;
* a file: CSV with ``arrival_s, prompt_tokens, output_tokens`` (or the Azure or Vidur
  column names) or JSONL records with those keys (or Mooncake's keys).

``rate_scale`` divides arrival times (2.0 = twice the load); ``num_requests`` keeps the first N.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from controlkit.sim.plants import default_data_dir
from identification.errors import ControlkitError, TelemetryError

__all__ = ["Workload", "load_workload", "sharegpt_lengths"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Workload:
    """Requests to replay: aligned arrays sorted by arrival.

    Attributes
    ----------
    name
        Where the workload came from.
    arrival_s
        Arrival times, seconds (non-decreasing, >= 0).
    prompt_tokens, output_tokens
        Prompt and output lengths, tokens (>= 1).
    """

    name: str
    arrival_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    slo_class: IntArray | None = None

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ControlkitError(f"workload {self.name!r}: arrays differ in length")
        if self.slo_class is not None and (
            len(self.slo_class) != n or (n and int(np.min(self.slo_class)) < 0)
        ):
            raise ControlkitError(f"workload {self.name!r}: slo_class must be one class index >= 0 per request")
        if n and (np.any(~np.isfinite(self.arrival_s)) or np.any(np.diff(self.arrival_s) < 0)):
            raise ControlkitError(f"workload {self.name!r}: arrival_s must be finite and sorted")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ControlkitError(f"workload {self.name!r}: prompt and output lengths must be >= 1")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def classes(self) -> IntArray:
        """Return the SLO class of every request (all 0 when the workload has none)."""
        return self.slo_class if self.slo_class is not None else np.zeros(len(self), dtype=np.int64)

    def subset(self, keep: slice | npt.NDArray[Any], *, rate_scale: float = 1.0) -> Workload:
        """Return the requests at ``keep``, arrival times divided by ``rate_scale`` (classes kept)."""
        cls = None if self.slo_class is None else self.slo_class[keep]
        return Workload(
            self.name, self.arrival_s[keep] / rate_scale, self.prompt_tokens[keep], self.output_tokens[keep], cls
        )

    def with_slo_classes(self, shares: tuple[float, ...], seed: int) -> Workload:
        """Assign every request an SLO class at random, class ``k`` with probability ``shares[k]``.

        Examples
        --------
        >>> w = Workload("w", np.zeros(1000), np.ones(1000, np.int64), np.ones(1000, np.int64))
        >>> round(float(w.with_slo_classes((0.3, 0.7), seed=0).classes().mean()), 1)
        0.7
        """
        p = np.asarray(shares, dtype=float)
        if len(p) < 1 or np.any(p < 0) or not p.sum() > 0:
            raise ControlkitError(f"SLO class shares must be >= 0 and not all 0, got {shares}")
        cls = np.random.default_rng(seed + 7919).choice(len(p), size=len(self), p=p / p.sum())
        return Workload(self.name, self.arrival_s, self.prompt_tokens, self.output_tokens, cls.astype(np.int64))

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (seconds)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    def clipped(self, max_model_len: int) -> tuple[Workload, int]:
        """Clip every request so that prompt + output <= ``max_model_len``.

        The prompt is cut to ``max_model_len - 1`` tokens, then the output to what remains
        (at least 1).  Returns the clipped workload and how many requests changed.

        Examples
        --------
        >>> w = Workload("w", np.array([0.0, 1.0]), np.array([10, 3000]), np.array([5, 10]))
        >>> c, n = w.clipped(2048)
        >>> (c.prompt_tokens.tolist(), c.output_tokens.tolist(), n)
        ([10, 2047], [5, 1], 1)
        """
        prompt = np.minimum(self.prompt_tokens, max_model_len - 1)
        output = np.maximum(1, np.minimum(self.output_tokens, max_model_len - prompt))
        changed = int(np.count_nonzero((prompt != self.prompt_tokens) | (output != self.output_tokens)))
        clipped = Workload(self.name, self.arrival_s, prompt.astype(np.int64), output.astype(np.int64), self.slo_class)
        return clipped, changed


def _make(name: str, arrival: npt.ArrayLike, prompt: npt.ArrayLike, output: npt.ArrayLike) -> Workload:
    a = np.asarray(arrival, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    a = a[order] - (a.min() if len(a) else 0.0)
    p = np.maximum(1, np.asarray(prompt, dtype=np.int64)[order])
    o = np.maximum(1, np.asarray(output, dtype=np.int64)[order])
    return Workload(name, a, p, o)


#: A data file that is absent: say where named data is looked for (a non-editable install has no ../shared/data).
_MISSING_DATA = (
    "{what} not found; named plants and workloads are read from $CONTROLKIT_SHARED_DATA (default: ../shared/data "
    "beside a source checkout), so set CONTROLKIT_SHARED_DATA to the shared data folder"
)


def sharegpt_lengths(data_dir: Path | None = None) -> tuple[IntArray, IntArray]:
    """ShareGPT prompt and output lengths (Llama-2 tokenizer, 10,000 conversations)."""
    path = (data_dir or default_data_dir()) / "sharegpt" / "sharegpt_val_10k_llama2.csv"
    if not path.is_file():
        raise TelemetryError(_MISSING_DATA.format(what="ShareGPT lengths"), path=str(path))
    df = pd.read_csv(path, usecols=["num_prefill_tokens", "num_decode_tokens"])
    return (df["num_prefill_tokens"].to_numpy(np.int64), df["num_decode_tokens"].to_numpy(np.int64))


def _sample_lengths(n: int, rng: np.random.Generator, data_dir: Path | None) -> tuple[IntArray, IntArray]:
    prompt, output = sharegpt_lengths(data_dir)
    idx = rng.integers(0, len(prompt), size=n)
    return prompt[idx], output[idx]


#: Most arrivals a synthetic step/ramp workload may generate before ``--num-requests`` truncates it.
MAX_SYNTHETIC_ARRIVALS = 5_000_000


def _poisson_piecewise(
    rate_at: object, t_end_s: float, rng: np.random.Generator, rate_max: float
) -> FloatArray:
    """Arrivals of an inhomogeneous Poisson process by thinning (rate_at: t -> rate)."""
    assert callable(rate_at)
    if rate_max <= 0:
        return np.zeros(0)
    expected = rate_max * t_end_s
    if expected > MAX_SYNTHETIC_ARRIVALS:  # bounded memory and time (docs/validation.md)
        raise ControlkitError(
            f"workload: a rate of {rate_max:g} req/s over {t_end_s:g} s is {expected:.3g} arrivals; at most "
            f"{MAX_SYNTHETIC_ARRIVALS:.0e} are generated (lower the rates or the duration)"
        )
    n_cand = rng.poisson(expected)
    cand = np.sort(rng.uniform(0.0, t_end_s, size=n_cand))
    rates = np.array([rate_at(t) for t in cand], dtype=float)
    keep = rng.uniform(0.0, rate_max, size=n_cand) < rates
    return np.asarray(cand[keep], dtype=np.float64)


def _floats(name: str, parts: list[str], count: int) -> list[float]:
    if len(parts) != count:
        raise ControlkitError(f"workload {name!r}: expected {count} numbers after the kind, got {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ControlkitError(f"workload {name!r}: {parts} are not all numbers") from None
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise ControlkitError(f"workload {name!r}: values must be finite and >= 0, got {values}")
    return values


def _synthetic(name: str, num_requests: int | None, seed: int, data_dir: Path | None) -> Workload:
    kind, *parts = name.split(":")
    rng = np.random.default_rng(seed)
    if kind == "sharegpt":
        n = num_requests or 1000
        arrivals = parts or ["poisson", "1"]
        mode = arrivals[0]
        if mode == "all-at-once":
            arr = np.zeros(n)
        elif mode == "poisson":
            (rate,) = _floats(name, arrivals[1:], 1)
            arr = np.cumsum(rng.exponential(1.0 / max(rate, 1e-12), size=n))
        elif mode == "gamma":
            rate, cv = _floats(name, arrivals[1:], 2)
            shape = 1.0 / max(cv, 1e-6) ** 2
            arr = np.cumsum(rng.gamma(shape, 1.0 / (max(rate, 1e-12) * shape), size=n))
        else:
            raise ControlkitError(
                f"workload {name!r}: arrivals must be poisson:<rate>, gamma:<rate>:<cv> or all-at-once"
            )
        p, o = _sample_lengths(n, rng, data_dir)
        return _make(name, arr, p, o)
    if kind == "step":
        r1, r2, t_sw = _floats(name, parts, 3)
        t_end = t_sw * 2.0
        arr = _poisson_piecewise(lambda t: r1 if t < t_sw else r2, t_end, rng, max(r1, r2))
    elif kind == "ramp":
        r0, r1, dur = _floats(name, parts, 3)
        arr = _poisson_piecewise(
            lambda t: r0 + (r1 - r0) * min(t / max(dur, 1e-12), 1.0), dur, rng, max(r0, r1)
        )
    else:
        raise ControlkitError(
            f"unknown workload {name!r}; known: azure-conv, azure-code, mooncake, sharegpt[:poisson:<rate>|"
            "gamma:<rate>:<cv>|all-at-once], step:<r1>:<r2>:<t_s>, ramp:<r0>:<r1>:<dur_s>, or a file"
        )
    if num_requests is not None:
        arr = arr[:num_requests]
    p, o = _sample_lengths(len(arr), rng, data_dir)
    return _make(name, arr, p, o)


def _from_frame(df: pd.DataFrame, name: str, path: str) -> Workload:
    cols = set(df.columns)
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
        ts = pd.to_datetime(df["TIMESTAMP"], format="mixed")
        arr = (ts - ts.min()).dt.total_seconds().to_numpy(float)
        return _make(name, arr, df["ContextTokens"], df["GeneratedTokens"])
    if {"timestamp", "input_length", "output_length"} <= cols:
        return _make(name, df["timestamp"].to_numpy(float) / 1000.0, df["input_length"], df["output_length"])
    if {"arrived_at", "num_prefill_tokens", "num_decode_tokens"} <= cols:
        return _make(name, df["arrived_at"], df["num_prefill_tokens"], df["num_decode_tokens"])
    if {"arrival_s", "prompt_tokens", "output_tokens"} <= cols:
        for col in ("arrival_s", "prompt_tokens", "output_tokens"):
            values = pd.to_numeric(df[col], errors="coerce")
            bad = np.flatnonzero(values.isna().to_numpy() | (values.to_numpy(float) < 0))
            if len(bad):
                raise TelemetryError(
                    f"expected a number >= 0, got {df[col].iloc[bad[0]]!r}",
                    path=path,
                    line=int(bad[0]) + 2,
                    field=col,
                )
        return _make(name, df["arrival_s"], df["prompt_tokens"], df["output_tokens"])
    raise TelemetryError(
        "expected columns arrival_s, prompt_tokens, output_tokens (or Azure TIMESTAMP/ContextTokens/"
        f"GeneratedTokens, or Mooncake timestamp/input_length/output_length); got {sorted(cols)}",
        path=path,
    )


def _read_file(path: Path) -> Workload:
    name = path.name
    if not path.is_file():
        raise TelemetryError(_MISSING_DATA.format(what="workload file"), path=str(path))
    if ".jsonl" in path.suffixes or path.suffix == ".json":
        df = pd.read_json(path, lines=True)
        if "schema" in df.columns:  # a header line such as {"schema": "controlkit.requests/1"}
            df = df[df["schema"].isna()].drop(columns=["schema"])
    else:
        df = pd.read_csv(path)
    return _from_frame(df, name, str(path))


_NAMED = {
    "azure-conv": ("azure_llm_2023", "AzureLLMInferenceTrace_conv.csv"),
    "azure-code": ("azure_llm_2023", "AzureLLMInferenceTrace_code.csv"),
    "mooncake": ("mooncake", "conversation_trace.jsonl.gz"),
}


@functools.lru_cache(maxsize=8)
def _named_trace(name: str, data_dir: Path) -> Workload:
    """Return a bundled trace, parsed once per process (workloads are never modified in place)."""
    folder, fname = _NAMED[name]
    wl = _read_file(data_dir / folder / fname)
    return Workload(name, wl.arrival_s, wl.prompt_tokens, wl.output_tokens)


def load_workload(
    name_or_path: str | Path,
    *,
    rate_scale: float = 1.0,
    num_requests: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    start_s: float = 0.0,
) -> Workload:
    """Build a workload by name or from a file.

    Parameters
    ----------
    name_or_path
        A name (see the module docstring) or a CSV/JSONL file of requests.
    rate_scale
        Load multiplier: arrival times are divided by it (> 0).
    num_requests
        Keep only the first N requests (by arrival); for ``sharegpt`` it is the count drawn
        (default 1000).
    seed
        Seed for sampled lengths and synthetic arrivals.
    data_dir
        The shared data folder (default :func:`default_data_dir`).
    start_s
        Replay a trace (or file) from this time on (trace seconds, before ``rate_scale``):
        requests arriving earlier are dropped and the rest shifted to start at 0, so that
        different ``start_s`` give different windows of one trace.  Ignored by synthetic
        workloads (their ``seed`` draws new arrivals).
    """
    if not (rate_scale > 0 and np.isfinite(rate_scale)):
        raise ControlkitError(f"rate_scale must be finite and > 0, got {rate_scale}")
    if num_requests is not None and num_requests < 1:
        raise ControlkitError(f"num_requests must be >= 1, got {num_requests}")
    text = str(name_or_path)
    if text in _NAMED:
        wl = _named_trace(text, data_dir or default_data_dir())
    elif Path(text).is_file():
        wl = _read_file(Path(text))
    else:
        wl = _synthetic(text, num_requests, seed, data_dir)
        start_s = 0.0
    if start_s > 0:
        if not start_s < wl.duration_s:
            raise ControlkitError(
                f"workload {text!r}: start_s={start_s} is not inside the trace (0..{wl.duration_s:g} s)"
            )
        keep = np.flatnonzero(wl.arrival_s >= start_s)
        wl = wl.subset(keep)
        wl = Workload(wl.name, wl.arrival_s - wl.arrival_s[0], wl.prompt_tokens, wl.output_tokens, wl.slo_class)
    if num_requests is not None:
        wl = wl.subset(slice(0, num_requests))
    if rate_scale != 1.0:
        wl = wl.subset(slice(None), rate_scale=rate_scale)
    return wl
