"""Design plots: step response, Bode and Nyquist of the loop, pole map over the slope interval."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from controlkit.certify.loop import char_poly, open_loop_poly
from controlkit.design import Design
from controlkit.loopsim import simulate_pid

__all__ = ["design_plots"]


def _affine(intercept_s: float, slope: float, b: float) -> float:
    return intercept_s + slope * b


def design_plots(d: Design, path: Path) -> None:
    """Write the four design plots of a PID design (or the operating point only) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    p, c = d.plant, d.controller
    if c is None:
        b = np.arange(p.b_min, p.b_max + 1)
        axes[0, 0].plot(b, p.intercept_s + p.k_max * b, label="upper slope")
        axes[0, 0].plot(b, p.intercept_s + p.k_min * b, label="lower slope")
        axes[0, 0].axhline(d.slos["tpot_s"], color="r", ls="--", label="TPOT SLO")
        axes[0, 0].axvline(d.operating_point.batch, color="k", ls=":", label="operating point")
        axes[0, 0].set_xlabel("batch")
        axes[0, 0].set_ylabel("step time (s)")
        axes[0, 0].legend()
    else:
        sp = d.tpot_target_s
        for s in (p.k_min, p.k_max):
            for dl in p.delays:
                tr = simulate_pid(
                    c,
                    setpoint_s=sp,
                    step_s=functools.partial(_affine, p.intercept_s, float(s)),
                    delay=dl,
                    b_min=p.b_min,
                    b_max=p.b_max,
                    start=p.b_min,
                    n_steps=400,
                )
                axes[0, 0].plot(tr.cap, label=f"slope {s:.2g}, delay {dl}")
        axes[0, 0].set(title="step response from b_min", xlabel="decision", ylabel="cap")
        axes[0, 0].legend(fontsize=7)
        w = np.geomspace(1e-3, np.pi, 600)
        z = np.exp(1j * w)
        for s in (p.k_min, p.k_max):
            for dl in p.delays:
                num, den = open_loop_poly(c, dl)
                resp = s * np.polyval(num, z) / np.polyval(den, z)
                axes[0, 1].loglog(w / c.sample_period_s, np.abs(resp), label=f"s={s:.2g}, d={dl}")
                axes[1, 0].plot(resp.real, resp.imag)
        axes[0, 1].axhline(1.0, color="k", lw=0.5)
        axes[0, 1].set(title="Bode magnitude |L|", xlabel="rad/s")
        axes[0, 1].legend(fontsize=7)
        axes[1, 0].plot([-1], [0], "rx")
        axes[1, 0].set(title="Nyquist", xlim=(-3, 1), ylim=(-3, 3))
        th = np.linspace(0, 2 * np.pi, 200)
        axes[1, 1].plot(np.cos(th), np.sin(th), "k", lw=0.5)
        for dl in p.delays:
            for s in np.linspace(p.k_min, p.k_max, 25):
                r = np.roots(char_poly(c, dl, float(s)))
                axes[1, 1].plot(r.real, r.imag, ".", ms=3, color=f"C{dl}")
        axes[1, 1].set(title="poles over the slope interval", aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
