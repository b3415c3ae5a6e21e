"""The benchmark runs end to end (its numbers are read by people, not asserted)."""

from __future__ import annotations

from ganlab.bench import main


def test_bench_runs_the_harness_and_the_bare_loop(capsys):
    assert main(["--cases", "mlp/ring8", "--steps", "3", "--repeats", "1",
                 "--eval-samples", "0", "--sweep-runs", "0"]) == 0
    out = capsys.readouterr().out
    assert "mlp/ring8" in out and "harness/bare" in out
    ratio, noise = map(float, out.strip().splitlines()[-1].split()[2:4])
    assert 0.2 < ratio < 5 and 0.2 < noise < 5  # the loops ran the same work
