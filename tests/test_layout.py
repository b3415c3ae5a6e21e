"""The package's structure: layers that follow the data flow, no import cycle, and a loop
that never names a trick (so adding one touches no loop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from ganlab.data import DATASETS
from ganlab.extras import EXTRAS
from ganlab.labels import LABEL_MODES
from ganlab.losses import LOSSES
from ganlab.nets.norm import NORMS

REPO = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layers_of_pyproject():
    # import-linter's layers contract ([tool.importlinter] in pyproject.toml)
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("ganlab")
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


@pytest.mark.parametrize("module", ["ganlab/gan.py", "ganlab/loop.py", "ganlab/launch.py",
                                    "ganlab/stacked.py", "ganlab/train.py",
                                    "ganlab/vectorize.py", "ganlab/graphs.py",
                                    "ganlab/memory.py", "ganlab/preflight.py"])
def test_the_round_and_the_loop_never_name_a_trick(module):
    source = (REPO / module).read_text()
    names = [*EXTRAS, *LABEL_MODES, *LOSSES, *DATASETS,
             *(n for n in NORMS if n != "none")]
    named = [n for n in names if f'"{n}"' in source or f"'{n}'" in source]
    assert named == []
