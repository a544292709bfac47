"""The whole workflow on a live vLLM engine, end to end (``controlkit live-demo``).

One ``vllm serve`` process (127.0.0.1, small KV cache so that memory binds) runs the hook for
the whole demo; policies are switched by rewriting the policy file the hook watches
(``CONTROLKIT_POLICY``, hot reload).  The phases:

1. **logging mode**: the policy is vLLM's default cap (``static`` at ``max_num_seqs``); the
   hook only logs steps while a single request (the batch-1 step) and then identification
   loads (a burst and Poisson traffic, seeds of their own) run, and ``controlkit scrape``
   records ``/metrics``;
2. ``controlkit identify`` on the step log (and on the scrape);
3. ``controlkit design`` for SLOs stated in multiples of the measured batch-1 step;
4. evaluation on two *new* arrival sequences at ``load`` x the measured burst capacity:
   every static cap runs on sequence A, the best one (by goodput) is chosen there, and the
   default cap, the chosen static and the designed controller (hot-reloaded) are scored on
   sequence B; all statics run on B too, for the table;
5. simulator fidelity: ``controlkit simulate`` with the identified plant predicts every
   evaluation run (runs the plant was not fitted to).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from controlkit.app.realengine.load import ArrivalSequence, drive, poisson_sequence, real_metrics, write_requests
from controlkit.app.realengine.server import VllmServer
from controlkit.app.workflow import design_controller, design_summary, identify_file, run_simulation
from controlkit.plant import DesignPlant
from controlkit.policyfile import PolicyFile
from controlkit.sim import load_plant, load_workload
from controlkit.sim.metrics import SLO
from identification.errors import ControlkitError
from identification.plant import load_model

__all__ = ["LiveDemoConfig", "run_live_demo"]


@dataclass(frozen=True)
class LiveDemoConfig:
    """Settings of :func:`run_live_demo` (lengths in tokens, times in seconds)."""

    model: str
    out_dir: Path
    max_num_seqs: int = 48
    num_gpu_blocks: int = 40
    prompt: tuple[int, int] = (64, 384)
    output: tuple[int, int] = (32, 160)
    num_requests: int = 160
    load: float = 0.9
    tpot_slo_x: float = 2.0
    ttft_slo_x: float = 150.0
    static_caps: tuple[int, ...] = (4, 8, 12, 16, 24)
    controller: str = "pid"
    seed_a: int = 101
    seed_b: int = 202
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def _set_policy(path: Path, policy: PolicyFile | Path) -> None:
    """Atomically replace the watched policy file and advance its mtime (the hook reloads it)."""
    tmp = path.with_suffix(".tmp")
    if isinstance(policy, Path):
        shutil.copyfile(policy, tmp)
    else:
        policy.save(tmp)
    os.replace(tmp, path)
    now = time.time_ns()
    os.utime(path, ns=(now, now))
    time.sleep(1.2)  # > the hook's reload_check_s, so the first step of the next run reloads


def _counter(text: str | None, name: str) -> float:
    from controlkit.scrape import parse_exposition

    return float(parse_exposition(text or "").get(name, 0.0))


class _Demo:
    def __init__(self, cfg: LiveDemoConfig, log: Any) -> None:
        self.cfg = cfg
        self.out = cfg.out_dir
        self.log = log
        self.policy_path = self.out / "policy.json"
        self.steps_path = self.out / "steps.jsonl"
        self.server = VllmServer(
            cfg.model, log_path=self.out / "serve.log",
            args=["--max-num-seqs", str(cfg.max_num_seqs), "--max-model-len", "1024", "--dtype", "float32",
                  "--enforce-eager", "--no-enable-prefix-caching", "--num-gpu-blocks-override",
                  str(cfg.num_gpu_blocks), "--scheduler-cls", "policies.vllm.make_scheduler", *cfg.extra_args],
            env={"CONTROLKIT_POLICY": str(self.policy_path), "CONTROLKIT_STEP_LOG": str(self.steps_path)},
        )
        self.results: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v)
                                                   for k, v in asdict(cfg).items()}}

    def static(self, cap: int) -> PolicyFile:
        return PolicyFile(kind="static", params={"max_num_seqs": cap})

    def steps(self) -> list[dict[str, Any]]:
        return [json.loads(s) for s in self.steps_path.read_text().splitlines()[1:] if s.strip()]

    def send(self, seq: ArrivalSequence, slo: SLO | None, tag: str) -> dict[str, Any]:
        before = self.server.get("/metrics")
        outcomes = drive(self.server.base_url, self.cfg.model, seq, timeout_s=300)
        time.sleep(0.3)
        pre = _counter(self.server.get("/metrics"), "vllm:num_preemptions_total") - _counter(
            before, "vllm:num_preemptions_total")
        write_requests(outcomes, self.out / f"requests-{tag}.jsonl")
        m = real_metrics(outcomes, slo or SLO(ttft_s=1e9, tpot_s=1e9))
        row = {"run": tag, **{k: v for k, v in m.to_dict().items() if k != "schema"},
               "num_preemptions": int(pre), "duration_s": m.sim_time_s}
        self.log(f"  {tag}: {m.throughput_tok_s:.0f} tok/s, goodput {m.goodput_req_s:.2f} req/s, "
                 f"TPOT p50/p99 {1e3 * m.tpot_p50_s:.1f}/{1e3 * m.tpot_p99_s:.1f} ms, preemptions {int(pre)}")
        return row

    def measure_b1(self) -> float:
        n0 = len(self.steps())
        one = ArrivalSequence(np.zeros(3), np.full(3, 32), np.full(3, 96), 0)
        for i in range(3):  # three lone requests, one after another
            self.send(ArrivalSequence(one.arrival_s[:1], one.prompt_tokens[:1], one.output_tokens[:1], i), None,
                      f"b1-{i}")
        lone = [s["step_s"] for s in self.steps()[n0:] if s["num_running"] == 1 and s["num_prefill_tokens"] == 0]
        if len(lone) < 20:
            raise ControlkitError(f"only {len(lone)} batch-1 decode steps in {self.steps_path}; cannot measure")
        return float(np.median(lone))

    def identification_phase(self) -> float:
        """Burst + Poisson traffic in logging mode; returns the burst capacity (req/s)."""
        cfg = self.cfg
        burst = poisson_sequence(1e4, cfg.num_requests, prompt=cfg.prompt, output=cfg.output, seed=11)
        row = self.send(burst, None, "ident-burst")
        capacity = row["num_finished"] / row["duration_s"]
        for k, frac in enumerate((0.3, 0.6)):
            seq = poisson_sequence(frac * capacity, cfg.num_requests // 2, prompt=cfg.prompt, output=cfg.output,
                                   seed=12 + k)
            self.send(seq, None, f"ident-poisson-{frac}")
        return float(capacity)

    def scrape_during(self, seconds: float) -> threading.Thread:
        from controlkit.scrape import scrape_to_csv

        def work() -> None:
            try:
                scrape_to_csv(self.server.base_url + "/metrics", self.out / "metrics.csv", interval_s=0.5,
                              duration_s=seconds)
            except Exception as exc:
                self.log(f"  scrape failed: {exc}")
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread


def _identify(demo: _Demo) -> Path:
    out = demo.out
    ident_steps = out / "ident-steps.jsonl"
    shutil.copyfile(demo.steps_path, ident_steps)  # the step log up to here (flushed when the engine drained)
    model = out / "model.json"
    try:
        identify_file(ident_steps, out=model)
    except ControlkitError as exc:
        raise ControlkitError(f"controlkit identify failed on {ident_steps}: {exc}") from None
    metrics_csv = out / "metrics.csv"
    if metrics_csv.is_file():
        try:
            identify_file(metrics_csv, out=out / "model-from-metrics.json")
            demo.results["identify_metrics_rc"] = 0
        except ControlkitError as exc:
            demo.log(f"  identify on the /metrics scrape failed: {exc}")
            demo.results["identify_metrics_rc"] = 1
    return model


def _design(demo: _Demo, model: Path, slo: SLO) -> Path | None:
    designed = demo.out / "designed.json"
    try:
        plant = DesignPlant.from_model(load_model(model), b_max=demo.cfg.max_num_seqs, source=str(model))
        design = design_controller(plant, demo.cfg.controller, slo.tpot_s, slo.ttft_s)
        demo.log(design_summary(design))
        design.to_policy_file().save(designed)
    except ControlkitError as exc:
        demo.log(f"  design failed: {exc}")
        demo.results["design_rc"] = 1
        return None
    demo.results["design_rc"] = 0
    return designed


def _simulate(demo: _Demo, model: Path, workload: Path, policy: str, slo: SLO, tag: str) -> dict[str, Any] | None:
    out = demo.out / f"sim-{tag}.json"
    try:
        run = run_simulation(load_plant(model), load_workload(str(workload)), policy, slo,
                             max_num_seqs=demo.cfg.max_num_seqs)
    except ControlkitError as exc:
        demo.log(f"  simulate {tag} failed: {exc}")
        return None
    out.write_text(json.dumps(run.doc, indent=2) + "\n", encoding="utf-8")
    return run.doc


def _evaluate(demo: _Demo, rate: float, slo: SLO, designed: Path | None, model: Path) -> None:
    cfg = demo.cfg
    seqs = {name: poisson_sequence(rate, cfg.num_requests, prompt=cfg.prompt, output=cfg.output, seed=seed)
            for name, seed in (("A", cfg.seed_a), ("B", cfg.seed_b))}
    files = {}
    for name, seq in seqs.items():
        from controlkit.app.realengine.load import write_sequence

        files[name] = write_sequence(seq, demo.out / f"sequence-{name}.jsonl")
    rows: list[dict[str, Any]] = []
    policies: list[tuple[str, str, PolicyFile | Path]] = [
        (f"static-{c}", f"static:max_num_seqs={c}", demo.static(c)) for c in cfg.static_caps]
    policies.append((f"default-{cfg.max_num_seqs}", f"static:max_num_seqs={cfg.max_num_seqs}",
                     demo.static(cfg.max_num_seqs)))
    if designed is not None:
        policies.append((f"designed-{cfg.controller}", str(designed), designed))
    for seq_name in ("A", "B"):
        demo.log(f"sequence {seq_name} ({cfg.num_requests} requests at {rate:.1f} req/s)")
        for name, spec, policy in policies:
            _set_policy(demo.policy_path, policy)
            row = demo.send(seqs[seq_name], slo, f"{name}-{seq_name}")
            row.update(policy=name, sequence=seq_name)
            sim = _simulate(demo, model, files[seq_name], spec, slo, f"{name}-{seq_name}")
            if sim is not None:
                row["sim_throughput_tok_s"] = sim["throughput_tok_s"]
                row["sim_tpot_p50_s"] = sim["tpot_p50_s"]
                row["sim_ttft_p50_s"] = sim["ttft_p50_s"]
            rows.append(row)
    demo.results["runs"] = rows
    statics_a = [r for r in rows if r["sequence"] == "A" and r["policy"].startswith("static-")]
    best = max(statics_a, key=lambda r: r["goodput_req_s"])["policy"]
    demo.results["best_static_on_A"] = best


def run_live_demo(cfg: LiveDemoConfig, log: Any = print) -> dict[str, Any]:
    """Run the demo (see the module docstring); writes ``results.json`` and ``table.md`` to ``out_dir``."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    demo = _Demo(cfg, log)
    demo.static(cfg.max_num_seqs).save(demo.policy_path)
    t0 = time.monotonic()
    log(f"starting vllm serve (log: {demo.server.log_path})")
    with demo.server:
        log(f"server up in {time.monotonic() - t0:.0f} s at {demo.server.base_url}; logging mode")
        scraper = demo.scrape_during(120.0)
        b1 = demo.measure_b1()
        capacity = demo.identification_phase()
        scraper.join(timeout=1.0)
        slo = SLO(ttft_s=cfg.ttft_slo_x * b1, tpot_s=cfg.tpot_slo_x * b1)
        demo.results.update(b1_step_s=b1, capacity_req_s=capacity, slo_tpot_s=slo.tpot_s, slo_ttft_s=slo.ttft_s)
        log(f"batch-1 step {1e3 * b1:.2f} ms; burst capacity {capacity:.1f} req/s; "
            f"SLO TPOT {1e3 * slo.tpot_s:.1f} ms, TTFT {slo.ttft_s:.2f} s")
        model = _identify(demo)
        designed = _design(demo, model, slo)
        _evaluate(demo, cfg.load * capacity, slo, designed, model)
    demo.results["wall_s"] = time.monotonic() - t0
    from controlkit.app.realengine.report import write_report

    write_report(demo.results, cfg.out_dir)
    return demo.results
