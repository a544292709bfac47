"""The Batching Configuration Advisor (BCA) of "Mind the Memory Gap" (arXiv 2503.08311).

BCA is offline: a profiling sweep over ``max_num_seqs`` under saturating load gives, per batch
cap ``B``, the throughput ``T(B)`` and the mean inter-token latency ``L(B)``;
:func:`bca_select` applies the advisor's rule and returns ``B_opt``; the runtime policy
(kind ``bca``) is then a static cap at ``B_opt``.  :func:`bca_sweep` runs any callable (a
simulator run, a real benchmark) over a grid to build the table; nothing here imports the
simulator.

Rules (SEEDS.md §4.3), with ``E(B) = T(B) / (B · T(1))``:

``"a"`` (official, ``advisor/bopt_plots/plots.py``; default)
    ``B_opt = max{B : E(B) > ε and L(B) ≤ L_max}``, ``ε = 0.2``, ``L_max = 5 · L(32)``.
``"b"`` (official, ``bopt_gpu.py``, the memory-freed figure)
    ``B_opt = max{B : L(B) ≤ 3 · L(32)}``: the efficiency test is unused in that script.
``"third-party"`` (ianw2560's ``bca.py``)
    feasible: ``E(B) > ε`` (0.1) and ``L(B) ≤ latency_limit_s`` (10 ms); among them the
    smallest ``B`` within 0.1% of the best feasible throughput.

An absolute ``latency_limit_s`` replaces ``L_factor · L(32)`` in rules ``"a"`` and ``"b"``.
Not expressed by the runtime contract (documented, not applied): the KV pool shrink to
``u(B_opt)`` and replication.

Examples
--------
>>> table = [BcaPoint(1, 1.0, 0.010), BcaPoint(32, 20.0, 0.020), BcaPoint(64, 25.0, 0.05),
...          BcaPoint(128, 27.0, 0.09), BcaPoint(256, 28.0, 0.2)]
>>> bca_select(table)            # E(64) = 0.39 > 0.2, L(64) = 0.05 <= 5 * 0.02; E(128) = 0.21
128
>>> bca_select(table, rule="b", latency_factor=2.5)  # L_max = 0.05
64
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from identification.errors import InfeasibleSpecError, PolicyError
from policies.baselines._params import check_params, param, parse_params, resolve_cap
from policies.registry import PolicyContext, register
from policies.tables import read_side_file

__all__ = [
    "BCA_RULES",
    "BcaParams",
    "BcaPoint",
    "BcaPolicy",
    "bca_select",
    "bca_sweep",
    "load_bca_table",
    "parse_bca_table",
]

BCA_RULES = ("a", "b", "third-party")
_DEFAULT_EPSILON = {"a": 0.2, "b": 0.3, "third-party": 0.1}
_DEFAULT_FACTOR = {"a": 5.0, "b": 3.0, "third-party": 0.0}
_THIRD_PARTY_LIMIT_S = 0.010
_THIRD_PARTY_TOLERANCE = 0.001


@dataclass(frozen=True, slots=True)
class BcaPoint:
    """One point of a profiling sweep.

    Parameters
    ----------
    batch
        The batch cap ``max_num_seqs`` of the run.
    throughput
        Throughput ``T(B)`` (any unit, the same for all points; the official rule uses req/s).
    latency_s
        Mean inter-token latency (or TPOT) ``L(B)`` in seconds.
    peak_kv_usage
        Peak fraction of KV blocks in use during the run, or ``None`` when unknown.
    """

    batch: int
    throughput: float
    latency_s: float
    peak_kv_usage: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise PolicyError(f"BCA point: batch={self.batch!r} must be an integer >= 1")
        for name in ("throughput", "latency_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PolicyError(f"BCA point batch={self.batch}: {name}={value!r} must be a finite number")
        if self.throughput < 0 or self.latency_s <= 0:
            raise PolicyError(
                f"BCA point batch={self.batch}: need throughput >= 0 and latency_s > 0, "
                f"got {self.throughput} and {self.latency_s}"
            )


def _as_points(table: Iterable[BcaPoint] | Mapping[int, Sequence[float]]) -> dict[int, BcaPoint]:
    items: Iterable[BcaPoint]
    if isinstance(table, Mapping):
        items = [BcaPoint(int(b), float(v[0]), float(v[1])) for b, v in table.items()]
    else:
        items = table
    points: dict[int, BcaPoint] = {}
    for pt in items:
        if not isinstance(pt, BcaPoint):
            raise PolicyError(f"BCA table: expected BcaPoint entries, got {type(pt).__name__}")
        if pt.batch in points:
            raise PolicyError(f"BCA table: batch {pt.batch} appears twice")
        points[pt.batch] = pt
    if not points:
        raise PolicyError("BCA table is empty; run a sweep first (bca_sweep)")
    return points


def bca_select(
    table: Iterable[BcaPoint] | Mapping[int, Sequence[float]],
    *,
    rule: str = "a",
    epsilon: float | None = None,
    latency_factor: float | None = None,
    reference_batch: int = 32,
    latency_limit_s: float | None = None,
) -> int:
    """Apply the BCA rule to a sweep table and return ``B_opt``.

    Parameters
    ----------
    table
        Sweep points (:class:`BcaPoint`), or a mapping ``batch -> (throughput, latency_s)``.
    rule
        ``"a"``, ``"b"`` or ``"third-party"`` (see the module docstring).
    epsilon
        Efficiency threshold ``ε`` (default per rule: 0.2, 0.3 (unused), 0.1).
    latency_factor
        ``L_factor`` in ``L_max = L_factor · L(reference_batch)`` (default 5 for ``"a"``, 3
        for ``"b"``).
    reference_batch
        The batch whose latency anchors ``L_max`` (32 in the paper's scripts).
    latency_limit_s
        Absolute latency limit; overrides the relative one (default 10 ms for
        ``"third-party"``).

    Raises
    ------
    PolicyError
        Unknown rule, an empty or malformed table, or a point the rule needs (``B = 1`` for
        the efficiency, ``reference_batch`` for a relative limit) missing.
    InfeasibleSpecError
        No batch satisfies the rule.
    """
    if rule not in BCA_RULES:
        raise PolicyError(f"BCA: rule={rule!r} must be one of {', '.join(BCA_RULES)}")
    points = _as_points(table)
    eps = _DEFAULT_EPSILON[rule] if epsilon is None else epsilon
    limit = latency_limit_s
    if limit is None and rule == "third-party":
        limit = _THIRD_PARTY_LIMIT_S
    if limit is None:
        factor = _DEFAULT_FACTOR[rule] if latency_factor is None else latency_factor
        if reference_batch not in points:
            raise PolicyError(
                f"BCA: the table has no batch {reference_batch} to anchor "
                f"L_max = {factor} * L({reference_batch}); "
                f"batches present: {sorted(points)}; give latency_limit_s or another reference_batch"
            )
        limit = factor * points[reference_batch].latency_s
    uses_efficiency = rule != "b"
    if uses_efficiency and 1 not in points:
        raise PolicyError(
            f"BCA: the efficiency E(B) = T(B)/(B*T(1)) needs batch 1; batches present: {sorted(points)}"
        )
    t1 = points[1].throughput if uses_efficiency else 0.0

    def feasible(pt: BcaPoint) -> bool:
        if pt.latency_s > limit:
            return False
        return not uses_efficiency or (t1 > 0 and pt.throughput / (pt.batch * t1) > eps)

    ok = sorted(b for b, pt in points.items() if feasible(pt))
    if not ok:
        raise InfeasibleSpecError(
            f"BCA rule {rule!r}: no batch has latency <= {limit:.6g} s"
            + (f" and efficiency > {eps}" if uses_efficiency else "")
            + "; relax the latency limit or epsilon"
        )
    if rule != "third-party":
        return ok[-1]
    best = max(points[b].throughput for b in ok)
    return next(b for b in ok if points[b].throughput >= (1.0 - _THIRD_PARTY_TOLERANCE) * best)


def bca_sweep(run_fn: Callable[[int], Any], grid: Iterable[int]) -> tuple[BcaPoint, ...]:
    """Profile ``run_fn`` over a grid of batch caps and return the sweep table.

    Parameters
    ----------
    run_fn
        Called as ``run_fn(batch)``; returns a :class:`BcaPoint`, or a tuple
        ``(throughput, latency_s)`` or ``(throughput, latency_s, peak_kv_usage)``.
    grid
        Batch caps to profile (positive integers, no repeats), e.g. ``(1, 2, 4, ..., 512)``.

    Examples
    --------
    >>> bca_sweep(lambda b: (min(b, 8) * 1.0, 0.5 + 0.25 * b), [1, 8, 16])[1]
    BcaPoint(batch=8, throughput=8.0, latency_s=2.5, peak_kv_usage=None)
    """
    batches = list(grid)
    if not batches:
        raise PolicyError("bca_sweep: the grid is empty")
    if len(set(batches)) != len(batches):
        raise PolicyError(f"bca_sweep: the grid {batches} repeats a batch")
    out: list[BcaPoint] = []
    for b in batches:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise PolicyError(f"bca_sweep: grid value {b!r} must be an integer >= 1")
        result = run_fn(b)
        if isinstance(result, BcaPoint):
            if result.batch != b:
                raise PolicyError(f"bca_sweep: run_fn({b}) returned a point for batch {result.batch}")
            out.append(result)
        elif isinstance(result, tuple) and len(result) in (2, 3):
            kv = float(result[2]) if len(result) == 3 else None
            out.append(BcaPoint(b, float(result[0]), float(result[1]), kv))
        else:
            raise PolicyError(
                f"bca_sweep: run_fn({b}) returned {type(result).__name__}; expected BcaPoint or "
                "(throughput, latency_s[, peak_kv_usage])"
            )
    return tuple(sorted(out, key=lambda pt: pt.batch))


def load_bca_table(path: str | Path) -> tuple[BcaPoint, ...]:
    """Read a sweep table from CSV with columns ``batch, throughput, latency_s[, peak_kv_usage]``.

    The path is read as given (a library call); policies built from a file or a spec string
    read their table through :func:`policies.tables.read_side_file` instead.

    Raises
    ------
    PolicyError
        Unreadable, irregular or oversized file, missing column, or a bad value (naming the
        file, line and field, never the content).
    """
    p = Path(path)
    return parse_bca_table(read_side_file(str(p.resolve()), str(p.resolve().parent), "BCA table"), str(p))


def parse_bca_table(text: str, name: str) -> tuple[BcaPoint, ...]:
    """Parse the text of a sweep table (see :func:`load_bca_table`); ``name`` is used in errors."""
    reader = csv.DictReader(text.splitlines())
    need = ("batch", "throughput", "latency_s")
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
        raise PolicyError(f"{name}: line 1: missing column(s) {', '.join(missing)}; expected {', '.join(need)}")
    points = []
    for line, row in enumerate(reader, start=2):
        field = "batch"
        try:
            batch = int(row["batch"])
            field = "throughput"
            thr = float(row["throughput"])
            field = "latency_s"
            lat = float(row["latency_s"])
            field = "peak_kv_usage"
            kv_text = (row.get("peak_kv_usage") or "").strip()
            kv = float(kv_text) if kv_text else None
            points.append(BcaPoint(batch, thr, lat, kv))
        except (TypeError, ValueError):  # the value is not echoed: the file may not be meant for us
            raise PolicyError(f"{name}: line {line}: field {field!r} is not a valid number") from None
    return tuple(points)


@dataclass(frozen=True, slots=True)
class BcaParams:
    """Hyper-parameters of the ``bca`` kind: either ``b_opt`` or a sweep ``table`` file."""

    KIND: ClassVar[str] = "bca"
    b_opt: int | None = param(None, kind="int?", lo=1, hi=1_000_000, doc="the advisor's choice, if known")
    table: str = param(
        "", kind="str", doc="CSV sweep table (batch, throughput, latency_s) to run the advisor on"
    )
    rule: str = param("a", kind="str", choices=BCA_RULES, doc="advisor rule")
    epsilon: float | None = param(None, kind="float?", lo=0.0, hi=1.0, doc="efficiency threshold ε")
    latency_factor: float | None = param(
        None, kind="float?", lo=0.0, hi=1e6, doc="L_max = factor · L(reference)"
    )
    reference_batch: int = param(32, kind="int", lo=1, hi=1_000_000, doc="batch anchoring L_max")
    latency_limit_s: float | None = param(
        None, kind="float?", lo=1e-9, hi=1e6, doc="absolute latency limit (s)"
    )

    def __post_init__(self) -> None:
        check_params(self)
        if (self.b_opt is None) == (not self.table):
            raise PolicyError("bca: give exactly one of b_opt=<int> or table=<csv path>")


class BcaPolicy:
    """A static cap at the advisor's ``B_opt``.

    Parameters
    ----------
    b_opt
        The batch cap chosen offline.
    """

    def __init__(self, b_opt: int) -> None:
        self.b_opt = b_opt
        self._limits = BatchLimits(b_opt)

    def decide(self, observation: Observation) -> BatchLimits:
        """Return ``max_active_seqs = B_opt``."""
        return self._limits

    def reset(self) -> None:
        """Nothing to forget."""


def build_bca(params: BcaParams, ctx: PolicyContext) -> BcaPolicy:
    """Resolve ``B_opt`` (running the advisor on the table if given) and build the policy."""
    if params.b_opt is not None:
        b_opt = params.b_opt
    else:
        text = read_side_file(params.table, ctx.policy_dir or None, "BCA table")
        b_opt = bca_select(
            parse_bca_table(text, params.table[:120]),
            rule=params.rule,
            epsilon=params.epsilon,
            latency_factor=params.latency_factor,
            reference_batch=params.reference_batch,
            latency_limit_s=params.latency_limit_s,
        )
    return BcaPolicy(resolve_cap("bca", "b_opt", b_opt, ctx.max_num_seqs))


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return build_bca(parse_params(BcaParams, pf.params), ctx)


register("bca", _factory)
