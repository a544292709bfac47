"""The design-side plant: what controller design and certification assume about the engine.

Identification produces a rich :class:`identification.PlantModel`; design needs only a few
numbers from it, collected here in the frozen :class:`DesignPlant`, so that every analysis
function depends on this one record and can be tested with hand-built plants.

The loop model (``docs/theory.md`` §1): at decision ``t`` the controller sees the step time
``y_t = f(c_{t-d}) + noise`` of a step that ran under the cap set ``d`` decisions earlier,
where ``f`` is increasing with incremental slopes in ``[k_min, k_max]`` seconds per sequence
and ``d`` is one of ``delays``.  KV memory: each running sequence ends up holding about
``tokens_per_seq`` tokens, i.e. ``ceil(tokens_per_seq / block_size)`` blocks.

Examples
--------
>>> p = DesignPlant(sample_period_s=0.03, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4,
...                 b_min=1, b_max=128, kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600)
>>> round(p.step_upper_s(100), 4)
0.035
>>> p.kv_blocks_per_seq
38
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

from identification.errors import FitQualityWarning, InfeasibleSpecError

__all__ = ["SLOPE_FLOOR_FRACTION", "DesignPlant"]

#: When the identified slope interval does not exclude zero (noisy steps, few batch levels), the
#: design assumes the slope is at least this fraction of its point estimate: the step time of
#: every engine grows with the batch, and the floor is stated in the certificate's assumptions.
SLOPE_FLOOR_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class DesignPlant:
    """The numbers the controller design and its certificate assume (SI units).

    Parameters
    ----------
    sample_period_s
        Nominal decision period: one decision per engine step of about this length.
    intercept_s
        Step time at zero batch (the affine model's intercept).
    k_min, k_nom, k_max
        Slope of step time versus running sequences (s/seq): certified interval and nominal.
    b_min, b_max
        Actuator range of the admission cap (sequences, integers, ``1 <= b_min < b_max``).
    kv_capacity_blocks, block_size
        KV-cache capacity (blocks; 0 when the telemetry had none: memory unknown, no memory
        claim is made and the memory-safe batch is not a design constraint) and tokens per block.
    tokens_per_seq
        KV tokens one sequence holds at completion (prompt + output), used for memory safety.
    delays
        The modelled measurement delays (integer decisions, each >= 1).
    kv_headroom
        Fraction of KV capacity kept free (0 <= headroom < 1).
    prompt_tokens_mean, output_tokens_mean
        Mean request lengths (tokens); 0 when the workload is unknown.
    arrival_rate_per_s
        Mean request arrival rate; 0 when unknown.
    prefill_s_per_token
        Extra step time per prefill token scheduled in a step.
    source
        Where the numbers came from (model file), for provenance.
    k_min_data
        The identified lower slope bound when it was not positive and ``k_min`` is the floor
        ``SLOPE_FLOOR_FRACTION * k_nom`` instead (NaN when the data's own bound is used).
    """

    sample_period_s: float
    intercept_s: float
    k_min: float
    k_nom: float
    k_max: float
    b_min: int
    b_max: int
    kv_capacity_blocks: int
    block_size: int
    tokens_per_seq: float
    delays: tuple[int, ...] = (1, 2)
    kv_headroom: float = 0.05
    prompt_tokens_mean: float = 0.0
    output_tokens_mean: float = 0.0
    arrival_rate_per_s: float = 0.0
    prefill_s_per_token: float = 0.0
    source: str = ""
    k_min_data: float = math.nan

    def __post_init__(self) -> None:
        def bad(name: str, value: object, want: str) -> InfeasibleSpecError:
            return InfeasibleSpecError(f"design plant field {name!r}={value!r}: expected {want}")

        for name in ("sample_period_s", "k_min", "k_nom", "k_max"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, v, "a finite number > 0")
        if not (self.k_min <= self.k_nom <= self.k_max):
            raise bad("k_nom", self.k_nom, f"k_min={self.k_min:g} <= k_nom <= k_max={self.k_max:g}")
        if not math.isfinite(self.intercept_s):
            raise bad("intercept_s", self.intercept_s, "a finite number")
        if not (1 <= self.b_min < self.b_max):
            raise bad("b_min/b_max", (self.b_min, self.b_max), "integers with 1 <= b_min < b_max")
        if self.kv_capacity_blocks < 0 or self.block_size < 1:
            raise bad(
                "kv_capacity_blocks/block_size",
                (self.kv_capacity_blocks, self.block_size),
                "capacity >= 0 (0: unknown) and block size >= 1",
            )
        if not (self.tokens_per_seq > 0):
            raise bad("tokens_per_seq", self.tokens_per_seq, "> 0")
        if not self.delays or any((not isinstance(d, int)) or d < 1 for d in self.delays):
            raise bad("delays", self.delays, "a non-empty tuple of integers >= 1")
        if not (0.0 <= self.kv_headroom < 1.0):
            raise bad("kv_headroom", self.kv_headroom, "0 <= headroom < 1")

    # -- step time -------------------------------------------------------------------------
    def step_nominal_s(self, batch: float) -> float:
        """Predicted step time at the nominal slope."""
        return self.intercept_s + self.k_nom * batch

    def step_upper_s(self, batch: float) -> float:
        """Step time at the upper slope: the conservative prediction designs hold to."""
        return self.intercept_s + self.k_max * batch

    # -- memory ----------------------------------------------------------------------------
    @property
    def kv_blocks_per_seq(self) -> int:
        """Blocks one sequence holds at completion (rounded up to whole blocks)."""
        return math.ceil(self.tokens_per_seq / self.block_size)

    @property
    def kv_usable_blocks(self) -> int:
        """Capacity minus headroom, in blocks."""
        return math.floor(self.kv_capacity_blocks * (1.0 - self.kv_headroom))

    @property
    def memory_known(self) -> bool:
        """Whether the KV capacity is known (``kv_capacity_blocks > 0``)."""
        return self.kv_capacity_blocks > 0

    @property
    def memory_max_batch(self) -> int:
        """The largest cap whose predicted KV fits in capacity minus headroom (``b_max`` if unknown)."""
        if not self.memory_known:
            return self.b_max
        return self.kv_usable_blocks // self.kv_blocks_per_seq

    def replace(self, **changes: Any) -> DesignPlant:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the assumptions as a JSON mapping (delays as a list)."""
        d = dataclasses.asdict(self)
        d["delays"] = list(self.delays)
        if math.isnan(self.k_min_data):
            del d["k_min_data"]  # strict JSON has no NaN; absent means the data's own bound is used
        return d

    @classmethod
    def example(cls, **overrides: Any) -> DesignPlant:
        """Return a reference plant for examples, tests and benchmarks (fields can be overridden).

        Step time ``0.02 + k b`` seconds with ``k`` in [1.0e-4, 1.5e-4] s/seq, sampled every
        40 ms, batches 1..512, 8000 KV blocks of 16 tokens, 600 tokens per sequence.

        Examples
        --------
        >>> DesignPlant.example(b_max=256).b_max
        256
        """
        base: dict[str, Any] = {
            "sample_period_s": 0.04,
            "intercept_s": 0.02,
            "k_min": 1e-4,
            "k_nom": 1.2e-4,
            "k_max": 1.5e-4,
            "b_min": 1,
            "b_max": 512,
            "kv_capacity_blocks": 8000,
            "block_size": 16,
            "tokens_per_seq": 600,
        }
        return cls(**(base | overrides))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DesignPlant:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in doc.items() if k in names}
        if "delays" in kw:
            kw["delays"] = tuple(int(d) for d in kw["delays"])
        return cls(**kw)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        delays: tuple[int, ...] = (1, 2),
        sample_period_s: float | None = None,
        b_min: int = 1,
        b_max: int | None = None,
        kv_headroom: float = 0.05,
        tokens_per_seq: float | None = None,
        extrapolate: bool = False,
        source: str = "",
    ) -> DesignPlant:
        """Collect the design numbers from an identified ``PlantModel``.

        Parameters
        ----------
        model
            An ``identification.PlantModel`` (``latency``, ``memory``, optional ``workload``).
        delays
            Measurement delays to certify for (decisions).
        sample_period_s
            Decision period; default the nominal step time at mid validity range.
        b_min, b_max
            Cap range.  ``b_max`` defaults to the memory-safe batch, capped at the top of
            the latency model's validity range unless ``extrapolate`` (the slope interval is
            only evidence inside that range).
        kv_headroom
            Fraction of KV capacity kept free.
        tokens_per_seq
            KV tokens per sequence at completion; default prompt + output means of the
            workload, else the latency model's typical context.
        extrapolate
            Allow ``b_max`` beyond the latency model's validity range.
        source
            Provenance (the model file's path) recorded in the certificate assumptions.
        """
        lat, mem, wl = model.latency, model.memory, getattr(model, "workload", None)
        k_lo, k_hi = (float(x) for x in lat.slope_interval_)
        k_min_data = math.nan
        if not k_lo > 0 and float(lat.slope_) > 0 and k_hi > 0:
            k_min_data = k_lo
            k_lo = SLOPE_FLOOR_FRACTION * min(float(lat.slope_), k_hi)
            warnings.warn(FitQualityWarning(
                f"the identified slope interval [{k_min_data:.3g}, {k_hi:.3g}] s/seq does not exclude 0; the "
                f"design assumes a slope >= {k_lo:.3g} s/seq ({SLOPE_FLOOR_FRACTION:.0%} of the point estimate), "
                "recorded in the certificate's assumptions"
            ), stacklevel=2)
        k_nom = min(max(float(lat.slope_), k_lo), k_hi)
        lo, hi = (float(x) for x in lat.batch_range_)
        prompt = float(getattr(wl, "prompt_tokens_mean_", 0.0) or 0.0) if wl is not None else 0.0
        output = float(getattr(wl, "output_tokens_mean_", 0.0) or 0.0) if wl is not None else 0.0
        rate = float(getattr(wl, "arrival_rate_per_s_", 0.0) or 0.0) if wl is not None else 0.0
        known = bool(getattr(mem, "known_", True))
        if tokens_per_seq is None:
            tokens_per_seq = prompt + output if prompt + output > 0 else float(lat.typical_context_tokens_)
            if not tokens_per_seq > 0 and not known:
                tokens_per_seq = 1.0  # no memory claim is made: the length only sizes the (unused) KV bound
        block_size = int(mem.block_size_)
        top = max(math.floor(hi), b_min + 1)
        headroom_max = int(mem.max_batch(tokens_per_seq, headroom=kv_headroom)) if known else top
        if b_max is None:
            b_max = headroom_max if extrapolate else min(headroom_max, top)
        mid = 0.5 * (lo + hi)
        intercept = float(lat.intercept_s_)
        if sample_period_s is None:
            sample_period_s = intercept + k_nom * mid
        base = float(lat.predict_step_s([mid], prefill_tokens=0)[0])
        with_prefill = float(lat.predict_step_s([mid], prefill_tokens=1024)[0])
        prefill = max(0.0, (with_prefill - base) / 1024.0)
        return cls(
            sample_period_s=float(sample_period_s),
            intercept_s=intercept,
            k_min=k_lo,
            k_nom=k_nom,
            k_max=k_hi,
            b_min=int(b_min),
            b_max=int(b_max),
            kv_capacity_blocks=int(mem.capacity_blocks_) if known else 0,
            block_size=block_size,
            tokens_per_seq=float(tokens_per_seq),
            delays=tuple(int(d) for d in delays),
            kv_headroom=float(kv_headroom),
            prompt_tokens_mean=prompt,
            output_tokens_mean=output,
            arrival_rate_per_s=rate,
            prefill_s_per_token=prefill,
            source=source,
            k_min_data=k_min_data,
        )
