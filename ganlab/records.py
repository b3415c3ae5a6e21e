"""A sweep's records as one small archive: what `compare` reads and what a staged sweep needs
to add its next stage, without checkpoints, sample grids or logs.

    python -m ganlab.records outputs/sweeps/smoothing-mnist-tiny records.tar.gz
    mkdir -p outputs/sweeps && tar -xzf records.tar.gz -C outputs/sweeps --keep-old-files

Kept, under the sweep dir's own name: every finished, diverged or failed run's
`result.json` (the bytes that were checked), `.hydra/config.yaml` and
`.hydra/overrides.yaml`, and each sweep's `stages.json` and `multirun.yaml` (a folder with
a multirun.yaml is a sweep, nested ones too). Hydra's multirun.yaml loses `hydra.runtime`
(the launching machine's working directory and config paths) and gets the archive's own
path for the sweep dir; any other absolute path of the machine a kept file names (an
error message, a `data.root=` override) stays as written, and is listed.

A run still running or interrupted is left out, named: without its checkpoint a relaunch
would train it again from the start, and so would a kept failed run's (named too: the
comparer counts it). A restored finished run is complete: relaunching the sweep leaves it
alone, so a study can go on with its next stage where its checkpoints are gone; extending
a run (a larger `train.steps`) needs its checkpoint, which the archive does not hold.
`--keep-old-files` makes tar stop rather than overwrite records already there.
"""

from __future__ import annotations

import argparse
import io
import posixpath
import sys
import tarfile
from pathlib import Path

from omegaconf import OmegaConf

from ganlab.result import RecordError, parse_result
from ganlab.storage import StorageError, atomic_write

RUN_FILES = (".hydra/config.yaml", ".hydra/overrides.yaml")
UNFINISHED = ("running", "interrupted")


class PackError(RuntimeError):
    """The archive could not be made; the message says which file and why, in one line."""


class Packed:
    """What `pack` wrote: the runs kept, the runs left out (unfinished), the kept runs that
    failed, and the kept files that still name a path of this machine."""

    def __init__(self) -> None:
        self.kept: list[Path] = []
        self.unfinished: list[Path] = []
        self.failed: list[Path] = []
        self.machine_paths: dict[str, str] = {}  # archive name -> the path it names
        self.top = ""  # the archive's top folder: what a restore makes under its target


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PackError(f"{path} is unreadable ({e.strerror or e})") from None


def _multirun(path: Path, sweep_name: str) -> bytes:
    """multirun.yaml without `hydra.runtime` and with `sweep_name` (its path in the archive)
    for the sweep dir; the rest as Hydra wrote it."""
    text = _read(path)
    try:
        conf = OmegaConf.create(text.decode())
        hydra = conf.get("hydra") if OmegaConf.is_dict(conf) else None
        if hydra is not None and OmegaConf.is_dict(hydra):
            hydra.pop("runtime", None)
            if OmegaConf.select(conf, "hydra.sweep.dir") is not None:
                hydra.sweep.dir = sweep_name
            given = OmegaConf.select(conf, "hydra.overrides.hydra")
            if given is not None:
                hydra.overrides.hydra = [o for o in given
                                         if not str(o).startswith("hydra.sweep.dir=")]
        return OmegaConf.to_yaml(conf).encode()
    except Exception as e:  # not text, not YAML, or not Hydra's: one line, naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PackError(f"{path} is not a readable multirun.yaml ({first})") from None


def _machine_paths(sweep_dir: Path) -> list[str]:
    """Absolute paths of this machine a kept file should not need to name, longest first."""
    candidates = {str(sweep_dir.resolve().parent), str(Path.cwd()), str(Path.home())}
    return sorted((c for c in candidates if len(Path(c).parts) > 1), key=len, reverse=True)


def _write(out: Path, data: bytes) -> None:
    """`data` to `out` whole or not at all: an archive already there stays on any failure."""
    try:
        atomic_write(out, data)
    except StorageError as e:
        raise PackError(f"could not write {out} ({e.strerror}); an archive already there "
                        f"is left as it was") from None


def pack(sweep_dir: Path, out: Path) -> Packed:
    """Write the archive of `sweep_dir`'s records to `out` (whole or not at all). A damaged
    record or an unreadable file is refused, naming it: an archive is for records that
    compare."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    if out.is_dir():
        raise PackError(f"{out} is a directory: name the archive, e.g. {out / 'records.tar.gz'}")
    if not sweep_dir.exists():
        raise PackError(f"{sweep_dir} is not a sweep dir (no such directory)")
    if not sweep_dir.is_dir():
        raise PackError(f"{sweep_dir} is a file, not a sweep dir (give hydra.sweep.dir)")
    found = sorted(p.parent for p in sweep_dir.rglob("result.json"))
    if not found:
        raise PackError(f"{sweep_dir} holds no run (no result.json below it)")
    packed, files = Packed(), []
    root = packed.top = sweep_dir.resolve().name

    def name_of(folder: Path) -> str:  # a folder's path inside the archive
        return posixpath.normpath(f"{root}/{folder.relative_to(sweep_dir).as_posix()}")

    for multirun in sorted(sweep_dir.rglob("multirun.yaml")):
        sweep = multirun.parent
        files.append((f"{name_of(sweep)}/multirun.yaml", _multirun(multirun, name_of(sweep))))
        if (sweep / "stages.json").is_file():
            files.append((f"{name_of(sweep)}/stages.json", _read(sweep / "stages.json")))
    for run in found:
        raw = _read(run / "result.json")
        try:
            record = parse_result(run / "result.json", raw)
        except RecordError as e:
            raise PackError(str(e)) from None
        if record["status"] in UNFINISHED:
            packed.unfinished.append(run)
            continue
        packed.kept.append(run)
        if record["status"] == "failed":
            packed.failed.append(run)
        files.append((f"{name_of(run)}/result.json", raw))  # a single run archives as itself
        files += [(f"{name_of(run)}/{name}", _read(run / name))
                  for name in RUN_FILES if (run / name).is_file()]
    if not packed.kept:
        raise PackError(f"{sweep_dir}: no run has finished yet ({len(packed.unfinished)} "
                        f"running or interrupted); nothing to keep")
    needles = _machine_paths(sweep_dir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            hit = next((n for n in needles if n.encode() in data), None)
            if hit:
                packed.machine_paths[name] = hit
    _write(out, buf.getvalue())
    return packed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ganlab.records", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path, help="a sweep dir (hydra.sweep.dir)")
    ap.add_argument("out", type=Path, help="the archive to write, e.g. records.tar.gz")
    args = ap.parse_args(argv)
    try:
        packed = pack(args.sweep_dir, args.out)
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n, size = len(packed.kept), args.out.stat().st_size
    whose = "1 run's" if n == 1 else f"{n} runs'"
    print(f"{args.out}: {whose} records, {size / 1024:.0f} kB; restore with `mkdir -p <dir> && "
          f"tar -xzf {args.out} -C <dir> --keep-old-files` (makes "
          f"<dir>/{packed.top})")
    for run in packed.unfinished:
        print(f"left out, not finished (a relaunch trains it again): {run}")
    for run in packed.failed:
        print(f"kept, failed (the comparer counts it; a relaunch of the restored sweep "
              f"trains it again from the start): {run}")
    for name, path in packed.machine_paths.items():
        print(f"note: {name} names {path}, a path of this machine (kept as written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
