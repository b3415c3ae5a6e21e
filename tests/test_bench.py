"""The benchmark runs end to end (its timings are read by people, not asserted)."""

from __future__ import annotations

import json

import pytest

from ganlab.bench import CASES, PACK_RUN, bench_case, bench_packing, main


def test_bench_times_the_real_loop_for_the_steps_it_reports(tmp_path):
    row = bench_case("mlp/ring8", ["data=ring8", "train.batch_size=32"], "cpu", steps=3,
                     repeats=2, workdir=tmp_path)
    # the harness really trained: 5 warm-up steps, then 2 repeats of 3 timed steps
    assert row["harness_steps"] == 5 + 2 * 3
    assert row["ratio"] == pytest.approx(row["harness_ms"] / row["bare_ms"])
    assert row["harness_ms"] > 0 and row["bare_ms"] > 0 and row["noise"] > 0
    # both loops run the same Adam kernel, and the harness's round waits for nothing
    assert row["optimizer_impl"] == "fused" and row["syncs_per_round"] == 0


def test_bench_prints_one_line_per_case_and_the_ratio_table(capsys, tmp_path):
    table = tmp_path / "out" / "table.txt"
    assert main(["--cases", "mlp/ring8", "--steps", "3", "--repeats", "1",
                 "--eval-samples", "0", "--sweep-runs", "0", "--table", str(table)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert table.read_text().splitlines() == lines[-2:]  # the closing table, kept
    assert lines[0].startswith("mlp/ring8") and "ratio" in lines[0]
    assert lines[-2].split() == ["case", "device", "harness/bare", "bare/bare", "syncs/round",
                                 "(target", "<=", "1.05,", "0)"]
    case, device, ratio, noise, syncs = lines[-1].split()[:5]
    assert (case, device, syncs) == ("mlp/ring8", "cpu", "0")
    # the table repeats the line's ratio, to three decimals
    assert f"ratio {float(ratio):.3f}" in lines[0] and float(noise) > 0


@pytest.mark.heavy
def test_packing_runs_k_at_once_and_sums_their_training_rates(tmp_path):
    rows = bench_packing("mlp/ring8", [1, 2], steps=20, device="cpu", launcher="joblib",
                         workdir=tmp_path)
    assert [(r["k"], r["runs"]) for r in rows] == [(1, 1), (2, 2)]
    # each sweep's runs trained the steps asked for
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert len(records) == 3 and {r["step"] for r in records} == {20}
    # each row's rate is its runs' rounds per second of training clock, summed, as their
    # records say; the speedup is k = 2's rate over k = 1's
    rates = {k: sum(20 / json.loads(p.read_text())["history"][-1]["wall_s"]
                    for p in (tmp_path / f"pack_mlp_ring8_joblib_{k}").rglob("result.json"))
             for k in (1, 2)}
    assert [r["rounds_per_s"] for r in rows] == pytest.approx([rates[1], rates[2]])
    assert rows[1]["speedup"] == pytest.approx(rates[2] / rates[1])


def test_every_case_packs_with_its_own_overrides():
    # `make gpu-check` packs every case: each has a packed run, the same nets and data as
    # its timed case, and image runs do not train the feature classifier on the way
    assert set(PACK_RUN) == set(CASES)
    for case, overrides in CASES.items():
        assert PACK_RUN[case][:len(overrides)] == overrides
        assert ("eval.features=none" in PACK_RUN[case]) == ("data=mnist" in overrides)
