"""BCA advisor rules on hand-made tables and on the paper's own sweeps."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from controlkit.contract import Observation
from identification.errors import InfeasibleSpecError, PolicyError
from policies.baselines.bca import BcaPoint, BcaPolicy, bca_select, bca_sweep, load_bca_table
from policies.registry import PolicyContext, build_policy

# T(1) = 10.  E(B) = T / (10 B): 1.0, 0.875, 0.45, 0.3, 0.19, 0.1.  L(32) = 0.02 -> 5x = 0.1.
TABLE = [
    BcaPoint(1, 10.0, 0.010),
    BcaPoint(8, 70.0, 0.012),
    BcaPoint(32, 144.0, 0.020),
    BcaPoint(64, 192.0, 0.040),
    BcaPoint(128, 243.2, 0.080),
    BcaPoint(256, 256.0, 0.150),
]


def test_rule_a_takes_the_largest_efficient_batch_within_the_latency_limit() -> None:
    # E(64) = 0.3 > 0.2 and L = 0.04 <= 0.1; E(128) = 0.19 fails; 256 fails both
    assert bca_select(TABLE) == 64
    # epsilon 0.15 admits 128 (E = 0.19, L = 0.08 <= 0.1)
    assert bca_select(TABLE, epsilon=0.15) == 128
    # latency factor 1.5: L_max = 0.03 -> 32
    assert bca_select(TABLE, latency_factor=1.5) == 32
    # an absolute limit replaces the relative one
    assert bca_select(TABLE, epsilon=0.05, latency_limit_s=0.2) == 256


def test_rule_b_ignores_efficiency() -> None:
    # L_max = 3 * 0.02 = 0.06 -> 64; factor 5 -> 0.1 -> 128 (E = 0.19 does not matter)
    assert bca_select(TABLE, rule="b") == 64
    assert bca_select(TABLE, rule="b", latency_factor=5.0) == 128


def test_third_party_rule_takes_the_smallest_batch_near_the_best_feasible_throughput() -> None:
    table = [BcaPoint(1, 10.0, 0.005), BcaPoint(16, 100.0, 0.008), BcaPoint(32, 100.05, 0.009)]
    # both feasible (E > 0.1, L <= 10 ms); 100 >= 0.999 * 100.05 -> the smaller, 16
    assert bca_select(table, rule="third-party") == 16
    # a mapping works too
    assert bca_select({1: (10.0, 0.005), 16: (100.0, 0.008)}, rule="third-party") == 16


def test_errors_name_what_is_missing() -> None:
    with pytest.raises(PolicyError, match="no batch 32"):
        bca_select([BcaPoint(1, 1.0, 0.01), BcaPoint(8, 5.0, 0.02)])
    with pytest.raises(PolicyError, match="needs batch 1"):
        bca_select([BcaPoint(32, 1.0, 0.01)])
    with pytest.raises(PolicyError, match="empty"):
        bca_select([])
    with pytest.raises(PolicyError, match="rule='c'"):
        bca_select(TABLE, rule="c")
    with pytest.raises(PolicyError, match="appears twice"):
        bca_select([BcaPoint(1, 1.0, 0.01), BcaPoint(1, 1.0, 0.01)])
    with pytest.raises(InfeasibleSpecError, match="no batch has latency"):
        bca_select(TABLE, latency_limit_s=0.001)
    with pytest.raises(PolicyError, match="latency_s=nan"):
        BcaPoint(4, 1.0, float("nan"))


def test_sweep_runs_any_callable_over_the_grid() -> None:
    calls: list[int] = []

    def run(batch: int) -> tuple[float, float]:
        calls.append(batch)
        return (10.0 * min(batch, 32) ** 0.8, 0.01 + 0.0005 * batch)

    table = bca_sweep(run, [32, 1, 8, 64])
    assert calls == [32, 1, 8, 64]
    assert [p.batch for p in table] == [1, 8, 32, 64]
    assert bca_select(table, rule="b") == 64  # L(64) = 0.042 <= 3 * L(32) = 0.078
    with pytest.raises(PolicyError, match="repeats"):
        bca_sweep(run, [1, 1])
    with pytest.raises(PolicyError, match="expected BcaPoint"):
        bca_sweep(lambda b: 3.0, [1])
    with pytest.raises(PolicyError, match="point for batch 2"):
        bca_sweep(lambda b: BcaPoint(2, 1.0, 0.1), [1])


def test_policy_kind_is_a_static_cap_from_b_opt_or_a_table_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROLKIT_TABLE_DIRS", str(tmp_path))  # spec strings read only allowed folders
    o = Observation(t_s=0.0, num_running=5, num_waiting=5, kv_blocks_used=1, kv_blocks_total=10)
    policy = build_policy("bca:b_opt=96", PolicyContext(max_num_seqs=256))
    assert isinstance(policy, BcaPolicy)
    assert policy.decide(o).max_active_seqs == 96
    path = tmp_path / "sweep.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["batch", "throughput", "latency_s"])
        for p in TABLE:
            writer.writerow([p.batch, p.throughput, p.latency_s])
    assert load_bca_table(path) == tuple(TABLE)
    assert build_policy(f"bca:table={path}").decide(o).max_active_seqs == 64
    assert build_policy(f"bca:table={path},rule=b,latency_factor=5").decide(o).max_active_seqs == 128
    with pytest.raises(PolicyError, match="exactly one of b_opt"):
        build_policy("bca")
    with pytest.raises(PolicyError, match="above the engine's max_num_seqs=64"):
        build_policy("bca:b_opt=96", PolicyContext(max_num_seqs=64))
    bad = tmp_path / "bad.csv"
    bad.write_text("batch,throughput,latency_s\n1,10,0.01\n8,fast,0.02\n")
    with pytest.raises(PolicyError, match=r"line 3: field 'throughput'"):
        load_bca_table(bad)


def _paper_table(
    path: Path, model: str, latency_column: str, output_len: str | None = None
) -> list[BcaPoint]:
    points = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row["model"] != model or not row["request_throughput"]:
                continue
            if output_len is not None and row["output_len"] != output_len:
                continue
            points.append(
                BcaPoint(
                    int(row["max_num_seqs"]),
                    float(row["request_throughput"]),
                    float(row[latency_column]) / 1e3,
                )
            )
    return points


@pytest.mark.parametrize(
    ("model", "reported"), [("opt-1.3b", 96), ("opt-2.7b", 128), ("llama-2-7b", 192), ("llama-2-13b", 192)]
)
def test_rule_a_reproduces_the_papers_choices_on_the_background_sweep(
    shared_data: Path, model: str, reported: int
) -> None:
    table = _paper_table(shared_data / "bca_memory_gap" / "background_runs_index.csv", model, "mean_itl_ms")
    assert bca_select(table, rule="a") == reported


@pytest.mark.parametrize("model", ["opt-1.3b", "opt-2.7b", "llama-2-7b"])
def test_rule_b_reproduces_b_opt_128_on_the_390_token_advisor_runs(shared_data: Path, model: str) -> None:
    path = shared_data / "bca_memory_gap" / "advisor_runs_index.csv"
    assert bca_select(_paper_table(path, model, "mean_tpot_ms", output_len="390"), rule="b") == 128
