"""A sweep's records as one small archive: what `compare` reads and what a staged sweep needs
to add its next stage, without checkpoints, sample grids, logs or anything of the machine
that made them.

    python -m ganlab.records outputs/sweeps/smoothing-mnist-tiny records.tar.gz
    mkdir -p outputs/sweeps && tar -xzf records.tar.gz -C outputs/sweeps    # restore

Kept, under the sweep dir's own name: every finished, diverged or failed run's
`result.json`, `.hydra/config.yaml` and `.hydra/overrides.yaml`, and the sweep's
`stages.json` and `multirun.yaml` (the latter without `hydra.runtime`, the launching
machine's working directory and config paths, and with the sweep dir's name for its path).
A run still running or interrupted is left out, named: without its checkpoint a relaunch
trains it again. A restored finished run is complete: relaunching the sweep leaves it
alone, so a study can go on with its next stage where its checkpoints are gone; extending
a run (a larger `train.steps`) needs its checkpoint, which the archive does not hold.
"""

from __future__ import annotations

import argparse
import io
import posixpath
import sys
import tarfile
from pathlib import Path

from omegaconf import OmegaConf

from ganlab.result import RecordError, read_result
from ganlab.storage import StorageError, atomic_write

RUN_FILES = ("result.json", ".hydra/config.yaml", ".hydra/overrides.yaml")
SWEEP_FILES = ("stages.json",)
UNFINISHED = ("running", "interrupted")


def _without_machine(path: Path, name: str) -> bytes:
    """multirun.yaml without what belongs to the launching machine: `hydra.runtime` (its
    working directory and config paths) and the sweep dir's path (the archive's top folder,
    `name`, stands for it); the rest as Hydra wrote it."""
    conf = OmegaConf.load(path)
    hydra = conf.get("hydra")
    if hydra is not None:
        hydra.pop("runtime", None)
        if OmegaConf.select(conf, "hydra.sweep.dir") is not None:
            hydra.sweep.dir = name
        given = OmegaConf.select(conf, "hydra.overrides.hydra")
        if given is not None:
            hydra.overrides.hydra = [o for o in given
                                     if not str(o).startswith("hydra.sweep.dir=")]
    return OmegaConf.to_yaml(conf).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def pack(sweep_dir: Path, out: Path) -> tuple[int, list[Path]]:
    """Write the archive of `sweep_dir`'s records to `out` (atomically: a failure leaves an
    earlier archive as it was); returns the number of runs kept and the runs left out: those
    still running or interrupted, whose record is worth nothing without their checkpoint (a
    relaunch trains them again). A run whose result.json cannot be read is refused, naming
    it: an archive is for records that compare."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep dir (no such directory)")
    found = sorted(p.parent for p in sweep_dir.rglob("result.json"))
    if not found:
        raise FileNotFoundError(f"{sweep_dir} holds no run (no result.json below it)")
    runs, unfinished = [], []
    for run in found:
        record = read_result(run)  # raises RecordError naming a damaged record
        (unfinished if record["status"] in UNFINISHED else runs).append(run)
    root = sweep_dir.resolve().name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in SWEEP_FILES:
            if (sweep_dir / name).is_file():
                _add(tar, f"{root}/{name}", (sweep_dir / name).read_bytes())
        for path in sorted(sweep_dir.rglob("multirun.yaml")):
            rel = path.relative_to(sweep_dir).as_posix()
            _add(tar, f"{root}/{rel}", _without_machine(path, root))
        for run in runs:
            folder = posixpath.normpath(f"{root}/{run.relative_to(sweep_dir).as_posix()}")
            for name in RUN_FILES:  # a single run's dir archives as itself
                if (run / name).is_file():
                    _add(tar, f"{folder}/{name}", (run / name).read_bytes())
    atomic_write(Path(out), buf.getvalue())
    return len(runs), unfinished


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ganlab.records", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path, help="a sweep dir (hydra.sweep.dir)")
    ap.add_argument("out", type=Path, help="the archive to write, e.g. records.tar.gz")
    args = ap.parse_args(argv)
    try:
        n, unfinished = pack(args.sweep_dir, args.out)
    except (FileNotFoundError, RecordError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = args.out.stat().st_size
    whose = "1 run's" if n == 1 else f"{n} runs'"
    print(f"{args.out}: {whose} records, {size / 1024:.0f} kB; restore with "
          f"`tar -xzf {args.out} -C <dir>` (makes <dir>/{args.sweep_dir.resolve().name})")
    for run in unfinished:
        print(f"left out, not finished (a relaunch trains it again): {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
