"""Discrete PID in velocity form with an integer, rate-limited output (STYLE.md item 7).

Vocabulary from simple-pid (``setpoint``, ``output_limits``, ``proportional_on_measurement``,
``auto_mode``, ``components``, ``reset()``), with four changes:

* time is injected: :meth:`PID.step` takes ``dt_s``; the wall clock is never read;
* there is no silent "return the previous output": every call computes a new output, and a
  non-positive ``dt_s`` or a non-finite measurement is an error;
* anti-windup is *conditional integration* (the velocity-form state is clipped to the
  limits, so it never integrates past a bound) or *back-calculation* (an unclipped state
  pulled back towards the clipped one with ``tracking_gain``);
* the output is an integer in ``output_limits`` that moves by at most ``rate_limit`` per call.

The controller is reverse-acting in the physical sense (a larger cap gives a slower step),
with error ``e = setpoint - measurement`` and positive gains.  One call is

``du = Kp*(e_t - e_{t-1}) + Ki*e_t*dt + (D_t - D_{t-1})``, clipped to ``[-rate, rate]``,

with ``D_t = beta*D_{t-1} - (1-beta)*(Kd/dt)*(yf_t - yf_{t-1})``, ``beta = Tf/(Tf+dt)``;
the output is ``floor(u + 1/2)``.  With proportional-on-measurement ``e_t - e_{t-1}`` is
replaced by ``-(yf_t - yf_{t-1})`` (identical for a constant setpoint, no kick on a step).

Examples
--------
>>> pid = PID(kp=0.0, ki=100.0, setpoint=0.05, output_limits=(1, 64), rate_limit=8, initial_output=10)
>>> pid.step(0.04, dt_s=0.05)   # 10 ms below the SLO -> +0.05 seq, rounds to 10
10
>>> pid.step(0.0, dt_s=0.05)    # far below -> +0.25 accumulates
10
>>> pid.components
PIDComponents(proportional=0.0, integral=0.25, derivative=0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlkit.filters import FilterSpec, make_filter
from identification.errors import PolicyError

__all__ = ["PID", "PIDComponents"]


@dataclass(frozen=True, slots=True)
class PIDComponents:
    """The increments of the last call, by term (sequences, before rate limiting)."""

    proportional: float = 0.0
    integral: float = 0.0
    derivative: float = 0.0


class PID:
    """Velocity-form PID producing an integer, rate-limited batch cap.

    Parameters
    ----------
    kp, ki, kd
        Gains: ``kp`` in seq/s of error, ``ki`` in seq/(s*s), ``kd`` in seq (>= 0).
    setpoint
        Target of the (filtered) measurement, seconds.
    output_limits
        Integer ``(b_min, b_max)``.
    rate_limit
        Largest change of the output per call (integer >= 1).
    proportional_on_measurement
        Take the proportional term on the measurement instead of the error.
    derivative_filter_s
        Time constant ``Tf`` of the first-order derivative filter (0: unfiltered).
    anti_windup
        ``"conditional"`` or ``"back_calculation"``.
    tracking_gain
        Back-calculation gain in ``(0, 1]`` (1 makes it equal to conditional integration).
    measurement_filter
        Filter applied to every measurement before the control law (default: none).
    initial_output
        Output before the first call (default ``b_min``).
    """

    def __init__(
        self,
        kp: float,
        ki: float,
        kd: float = 0.0,
        *,
        setpoint: float,
        output_limits: tuple[int, int],
        rate_limit: int = 1_000_000,
        proportional_on_measurement: bool = True,
        derivative_filter_s: float = 0.0,
        anti_windup: str = "conditional",
        tracking_gain: float = 1.0,
        measurement_filter: FilterSpec | None = None,
        initial_output: int | None = None,
    ) -> None:
        for name, v in (("kp", kp), ("ki", ki), ("kd", kd), ("derivative_filter_s", derivative_filter_s)):
            if not (math.isfinite(v) and v >= 0):
                raise PolicyError(f"PID {name}={v!r}: expected a finite number >= 0")
        lo, hi = int(output_limits[0]), int(output_limits[1])
        if not (1 <= lo <= hi):
            raise PolicyError(f"PID output_limits={output_limits!r}: expected integers 1 <= low <= high")
        if int(rate_limit) < 1:
            raise PolicyError(f"PID rate_limit={rate_limit!r}: expected an integer >= 1")
        if anti_windup not in ("conditional", "back_calculation"):
            raise PolicyError(
                f"PID anti_windup={anti_windup!r}: expected 'conditional' or 'back_calculation'"
            )
        if not (0.0 < tracking_gain <= 1.0):
            raise PolicyError(f"PID tracking_gain={tracking_gain!r}: expected 0 < gain <= 1")
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.setpoint = float(setpoint)
        self.output_limits = (lo, hi)
        self.rate_limit = int(rate_limit)
        self.proportional_on_measurement = bool(proportional_on_measurement)
        self.derivative_filter_s = float(derivative_filter_s)
        self.anti_windup = anti_windup
        self.tracking_gain = float(tracking_gain)
        self.measurement_filter = measurement_filter or FilterSpec("none")
        self._initial = lo if initial_output is None else min(max(int(initial_output), lo), hi)
        self._filter = make_filter(self.measurement_filter)
        self.auto_mode = True
        self.reset()

    def reset(self) -> None:
        """Forget all state, as if newly constructed."""
        self._filter.reset()
        self._state = float(self._initial)  # clipped (conditional) or unclipped (back-calc)
        self._output = self._initial
        self._yf_prev: float | None = None
        self._e_prev = 0.0
        self._d_prev = 0.0
        self.components = PIDComponents()

    @property
    def output(self) -> int:
        """The output of the last call (or the initial one)."""
        return self._output

    def set_auto_mode(self, enabled: bool, last_output: int | None = None) -> None:
        """Switch between automatic and manual; switching to auto is bumpless.

        ``last_output`` is the actuator value in force (the manual one); the integrator starts
        from it and the derivative and proportional memories restart, so the first automatic
        output moves from there by at most the rate limit.
        """
        if enabled and not self.auto_mode:
            start = self._output if last_output is None else int(last_output)
            lo, hi = self.output_limits
            self._output = min(max(start, lo), hi)
            self._state = float(self._output)
            self._yf_prev = None
            self._d_prev = 0.0
        self.auto_mode = bool(enabled)

    def set_manual_output(self, output: int) -> None:
        """In manual mode, set the output the next calls return (clipped to the limits)."""
        lo, hi = self.output_limits
        self._output = min(max(int(output), lo), hi)

    def step(self, measurement: float, dt_s: float) -> int:
        """Take one measurement and ``dt_s`` seconds since the last call; return the new output."""
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise PolicyError(f"PID.step dt_s={dt_s!r}: expected a finite number of seconds > 0")
        if not math.isfinite(measurement):
            raise PolicyError(f"PID.step measurement={measurement!r}: expected a finite number")
        yf = self._filter.update(measurement)
        err = self.setpoint - yf
        if not self.auto_mode:
            self._yf_prev, self._e_prev = yf, err
            self.components = PIDComponents()
            return self._output
        if self._yf_prev is None:
            self._yf_prev, self._e_prev = yf, err
        dy = yf - self._yf_prev
        d_p = -self.kp * dy if self.proportional_on_measurement else self.kp * (err - self._e_prev)
        d_i = self.ki * err * dt_s
        beta = self.derivative_filter_s / (self.derivative_filter_s + dt_s)
        d_now = beta * self._d_prev - (1.0 - beta) * (self.kd / dt_s) * dy
        d_d = d_now - self._d_prev
        du = min(max(d_p + d_i + d_d, -self.rate_limit), self.rate_limit)
        lo, hi = self.output_limits
        if self.anti_windup == "conditional":
            self._state = min(max(self._state + du, lo), hi)
            applied = self._state
        else:
            clipped = min(max(self._state, lo), hi)
            self._state = self._state + du + self.tracking_gain * (clipped - self._state)
            applied = min(max(self._state, lo), hi)
        self._output = min(max(math.floor(applied + 0.5), lo), hi)
        self._yf_prev, self._e_prev, self._d_prev = yf, err, d_now
        self.components = PIDComponents(d_p, d_i, d_d)
        return self._output
