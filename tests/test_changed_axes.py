"""A launch into a sweep dir whose runs are named by other keys (a relaunch with a changed or
extra key) is warned that its cells land beside them as variants of one study."""

from __future__ import annotations

import json
from pathlib import Path

from ganlab.sweeper import cell_keys, changed_axes

HELD = ["experiment=smoothing", "smoothing=one_sided", "model=dcgan_tiny", "train.steps=3000",
        "launcher=joblib", "fanout.n_jobs=2", "logger=none"]


def _run(sweep: Path, cell: str, overrides: list[str] | None) -> None:
    run_dir = sweep / cell / "seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(
        {"status": "completed", "seed": 0, "trick": {}, "comparability": {}, "metrics": {},
         "history": [], "overrides": overrides}))


def test_cell_keys_leave_out_infrastructure_study_schedule_and_seed():
    assert cell_keys([*HELD, "seed=3", "+extras.x=1"]) == {
        "smoothing", "model", "train.steps", "extras.x"}


def test_the_same_keys_with_other_values_say_nothing(tmp_path):
    _run(tmp_path, "model=dcgan_tiny,smoothing=one_sided,train.steps=3000", HELD)
    jobs = [[*HELD[:1], "smoothing=none", *HELD[2:], "seed=4"]]
    assert changed_axes(tmp_path, jobs) is None
    assert changed_axes(tmp_path / "new", jobs) is None  # a new sweep dir


def test_an_extra_or_a_missing_key_is_named(tmp_path):
    _run(tmp_path, "model=dcgan_tiny,smoothing=one_sided,train.steps=3000", HELD)
    _run(tmp_path, "damaged", None)  # a record without overrides says nothing
    extra = changed_axes(tmp_path, [[*HELD, "train.lr_g=1e-3", "seed=0"]])
    assert f"{tmp_path} holds runs whose cells are named by other keys" in extra
    assert "(it sets train.lr_g, which they do not)" in extra
    assert "give it its own hydra.sweep.dir" in extra
    missing = changed_axes(tmp_path, [["smoothing=none", "train.steps=3000", "seed=0"]])
    assert "(it leaves out model, which they set)" in missing


def test_a_relaunch_of_either_earlier_command_says_nothing(tmp_path):
    first = [*HELD, "seed=0"]
    second = [*HELD, "train.lr_g=1e-3", "seed=0"]
    _run(tmp_path, "model=dcgan_tiny,smoothing=one_sided,train.steps=3000", first[:-1])
    _run(tmp_path, "model=dcgan_tiny,smoothing=one_sided,train.lr_g=1e-3,train.steps=3000",
         second[:-1])
    assert changed_axes(tmp_path, [first]) is None
    assert changed_axes(tmp_path, [second]) is None
    both = changed_axes(tmp_path, [[*HELD, "train.lr_g=1e-3", "train.lr_d=1e-3", "seed=0"]])
    assert "(it sets train.lr_d, which they do not)" in both


def test_a_cell_whose_first_record_is_damaged_is_read_from_another_seed(tmp_path):
    cell = "model=dcgan_tiny,smoothing=one_sided,train.steps=3000"
    _run(tmp_path, cell, HELD)
    (tmp_path / cell / "seed=0").rename(tmp_path / cell / "seed=1")
    (tmp_path / cell / "seed=0").mkdir()
    (tmp_path / cell / "seed=0" / "result.json").write_text("{damaged")
    assert "it sets train.lr_g" in changed_axes(tmp_path, [[*HELD, "train.lr_g=1e-3"]])
