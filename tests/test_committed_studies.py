"""A committed study report is what its committed records give: extracting the records and
running the README's compare command reproduces every number of the report."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ganlab.compare.__main__ import main

REPO = Path(__file__).resolve().parents[1]

# records archive, committed report, the sweep dir and the README's compare arguments, and
# each variant's (primary verdict, stage) as the README states them
STUDIES = [
    ("experiments/salimans2016-mnist/records-tiny.tar.gz",
     "experiments/salimans2016-mnist/report_tiny_rerun.json",
     "outputs/sweeps/salimans2016-mnist-tiny",
     ["--metric", "fid", "--seeds-min", "3", "--seeds-step", "2", "--seeds-max", "7"],
     {"all": ("baseline", None), "minus_l": ("baseline", None), "minus_mbf": ("worse", 1),
      "minus_ls": ("worse", 2), "minus_l_plus_ha": ("worse", 3),
      "minus_vbn_plus_bn": ("no clear difference", 3)}),
]


@pytest.mark.parametrize(("archive", "report", "sweep", "args", "verdicts"), STUDIES,
                         ids=[s[1].split("/")[1] for s in STUDIES])
def test_the_committed_report_is_what_the_committed_records_give(
        archive, report, sweep, args, verdicts, tmp_path, monkeypatch):
    sweeps = tmp_path / "outputs" / "sweeps"
    sweeps.mkdir(parents=True)
    with tarfile.open(REPO / archive) as tar:
        tar.extractall(sweeps, filter="data")
    monkeypatch.chdir(tmp_path)  # run dirs in the report are relative, as committed
    assert main([sweep, *args, "--out", str(tmp_path / "rep"), "--no-wandb"]) == 0
    now = json.loads((tmp_path / "rep" / "report.json").read_text())
    committed = json.loads((REPO / report).read_text())
    for doc in (now, committed):
        doc.pop("generated")
    assert now == committed
    assert {row["variant"]: (row["verdict"], row["stage"])
            for c in now["classes"] for row in c["tables"][0]["rows"]} == verdicts
