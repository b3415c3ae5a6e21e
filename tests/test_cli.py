"""The command line as a Hydra user meets it: help that describes every group and key from
the schema, tab completion that installs and completes, pointers where an entry point went,
argument-order mistakes caught in one line, and progress that never goes silent."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from ganlab.compare.__main__ import main as compare_main
from ganlab.config import group_options
from ganlab.keyhelp import GROUPS, key_descriptions
from ganlab.stops import Progress, terminal_usable
from tests.helpers import run_here


def test_every_key_of_the_schema_has_a_description():
    described = key_descriptions()
    assert {"train.steps", "smoothing.real_target", "extras.feature_matching.weight",
            "fanout.seeds", "seed"} <= set(described)
    assert [k for k, text in described.items() if not text] == []
    # drawn from the field's own comment in ganlab/config.py
    assert described["data.split"] == "the split G is trained on"
    assert described["train.d_steps"] == "k: D updates per round"


def test_help_lists_each_group_with_its_options_and_each_key_with_its_description():
    out = run_here("--help")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for group in GROUPS:
        (line,) = [x for x in lines if x.split()[:1] == [group]]
        assert line.split(None, 1)[1] == ", ".join(group_options(group))
    for key, text in key_descriptions().items():
        (line,) = [x for x in lines if x.split()[:1] == [key]]
        assert line.rstrip().endswith(text)
    assert any(x.split()[:3] == ["train.steps", "=", "2000"] for x in lines)


def test_tab_completion_installs_and_completes_groups_options_and_keys():
    app = Path(sys.executable).parent / "ganlab-train"
    if not app.exists() or shutil.which("bash") is None:
        pytest.skip("needs the installed ganlab-train command and bash")
    script = ('eval "$(ganlab-train -sc install=bash)"\n'
              'for line in "ganlab-train smoothing=o" "ganlab-train train.lr"; do\n'
              '  COMP_LINE="$line"; COMP_WORDS=($line); COMP_CWORD=1\n'
              '  COMP_POINT=${#COMP_LINE}; hydra_bash_completion\n'
              '  echo "${COMPREPLY[*]}"\n'
              'done\n')
    env = {**os.environ, "PATH": f"{app.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["smoothing=one_sided", "train.lr_d= train.lr_g="]


def test_a_removed_entry_point_says_where_its_job_went(tmp_path):
    out = run_here(str(tmp_path), module="ganlab.summary")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"ganlab.summary is now part of the comparer: python -m ganlab.compare {tmp_path} "
        "--brief (mean ± sd per variant), or without --brief for the verdicts")


def test_a_directory_after_baseline_is_caught_in_one_line(tmp_path, capsys):
    assert compare_main(["--baseline", "smoothing=none", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ganlab.compare: --baseline takes KEY=VALUE pairs and "
                           f"'{tmp_path}' is not one; if it is a directory, put the "
                           "directories first")


def _pty_with_columns(columns: int):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return os.fdopen(leader, "rb", buffering=0), os.fdopen(follower, "w")


def test_a_terminal_of_zero_columns_is_not_one_to_draw_a_bar_on():
    for columns, usable in ((80, True), (0, False)):
        leader, follower = _pty_with_columns(columns)
        with leader, follower:
            assert terminal_usable(follower) is usable
    assert terminal_usable(open(os.devnull, "w")) is False


def test_long_work_without_a_terminal_logs_progress_lines(caplog, monkeypatch):
    import ganlab.stops as stops

    clock = iter(range(0, 10_000, 20))  # 20 s between calls
    monkeypatch.setattr(stops.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="ganlab.train"):
        with Progress(1000, "mnist test: real features") as progress:
            for _ in range(10):
                progress.update(100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(x.startswith("mnist test: real features ") for x in lines)
    assert "images/s" in lines[0] and "left" in lines[0]
    assert len(lines) == 5  # every 30 s of a 200 s piece of work (20 s per update)


def test_readme_trick_table_names_only_keys_and_options_that_exist():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("### Toggling each trick", 1)[1].split("\n\n", 2)[1]
    keys = set(key_descriptions())
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert len(rows) >= 10
    for row in rows:
        overrides = re.findall(r"`(\w[\w.]*)=`", row[1])
        for name in overrides:
            assert name in keys or name in GROUPS, f"README names {name}=, not in the schema"
        if len(overrides) == 1 and overrides[0] in GROUPS:  # a group: every option listed
            listed = set(re.findall(r"`([a-z][a-z0-9_]*)`", row[2]))
            assert listed == set(group_options(overrides[0])), overrides[0]


def test_on_a_terminal_log_lines_never_break_the_bar(tmp_path):
    # a real terminal (a pty of 100 columns): the bar is drawn on stderr, the run's log lines
    # on stdout; each log line must start a line of its own, never continue a bar's
    leader, follower = _pty_with_columns(100)
    args = ["train.steps=60", "train.log_every=20", "eval.every=30", "eval.num_samples=100",
            "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    with leader, follower:
        proc = subprocess.Popen([sys.executable, "-m", "ganlab.train", *args],
                                cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL,
                                stdout=follower, stderr=follower)
        follower.close()
        chunks = []
        while True:
            try:
                chunk = leader.read(65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "%|" in screen  # a bar was drawn
    assert "run dir " in screen and "step 60/60" in screen
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in screen.split("\n")
             if "][ganlab.train][INFO] - step " in line]
    assert len(shown) >= 2 and all(line.startswith("[20") for line in shown), shown
