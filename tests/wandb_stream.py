"""Read what a run sent to W&B from its offline `.wandb` file: wandb's own protobuf records
(`wandb_internal_pb2.Record`) in LevelDB's log framing, so tests assert what W&B would show
(group, name, job type, tags, config, history rows, final summary) rather than that a file
exists.

Framing: a 7-byte file header (":W&B", magic 0xBEE1, version 0), then records in 32 KiB
blocks; each piece has a 7-byte header (crc32, length, type: 1 whole, 2 first, 3 middle,
4 last) and a block's tail shorter than a header is padding.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a .wandb file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding at a block's end
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:  # zeros: the rest of the block is unused
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
    return out


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class Stream:
    """A W&B run as one offline stream recorded it."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # define_metric declarations
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_stream(path: Path) -> Stream:
    from wandb.proto import wandb_internal_pb2 as pb

    s = Stream()
    for raw in raw_records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            s.run_id, s.project, s.entity = r.run_id, r.project, r.entity
            s.group, s.name, s.job_type, s.tags = (r.run_group, r.display_name, r.job_type,
                                                   list(r.tags))
            for item in r.config.update:
                s.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                s.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            s.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                s.summary[_key(item)] = json.loads(item.value_json)
            for item in rec.summary.remove:
                s.summary.pop(_key(item), None)
        elif kind == "metric":
            m = rec.metric
            s.metrics[m.name or m.glob_name] = m
        elif kind == "artifact":
            a = rec.artifact
            s.artifacts.append({"name": a.name, "type": a.type,
                                "files": [e.path for e in a.manifest.contents]})
        elif kind == "exit":
            s.exit_code = rec.exit.exit_code
    return s


def streams(run_dir: Path) -> list[Stream]:
    """Every offline W&B stream under a run dir, oldest first."""
    return [read_stream(p) for p in sorted(Path(run_dir).glob("wandb/offline-run-*/*.wandb"))]
