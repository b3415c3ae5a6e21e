"""`python -m ganlab.train --help`: every config group with its options and every key with
its default and a one-line description, read from the schema itself. A key's description is
the comment on its field (or the comment lines just above it) in ganlab/config.py or in a
plug-in's `Options`, so the help and the code cannot disagree; a test fails for a key
without one."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import typing

from omegaconf import OmegaConf

from ganlab.config import group_options
from ganlab.configure import compose, schema

GROUPS = ("data", "model", "loss", "smoothing", "norm", "labels", "extras", "logger",
          "launcher", "experiment", "ablation")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """{field: its description} from the comments in `cls`'s source: the comment on the
    field's own lines, else the comment lines right above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}  # line -> its comment
    alone: set[int] = set()  # lines that hold nothing but a comment
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
            if tok.line.strip().startswith("#"):
                alone.add(tok.start[0])
    (node,) = ast.parse(source).body
    found = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        own = [comments[i] for i in range(item.lineno, item.end_lineno + 1) if i in comments]
        above, line = [], item.lineno - 1
        while line in alone:
            above.insert(0, comments[line])
            line -= 1
        found[item.target.id] = " ".join(own or above)
    return found


def key_descriptions(cls: type | None = None, prefix: str = "") -> dict[str, str]:
    """Every key of the schema (dotted), with its description ("" where it has none)."""
    cls = cls or schema()
    hints = typing.get_type_hints(cls)  # the field types (annotations are strings here)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out.update(key_descriptions(kind, f"{prefix}{f.name}."))
            continue
        owner = next(c for c in cls.__mro__ if f.name in getattr(c, "__annotations__", {}))
        out[f"{prefix}{f.name}"] = field_comments(owner).get(f.name, "")
    return out


def command_help() -> str:
    default = compose([])
    lines = ["python -m ganlab.train [GROUP=OPTION | KEY=VALUE ...]   train one GAN",
             "python -m ganlab.train -m [GROUP=A,B | KEY=V1,V2 ...]   a sweep (multirun)",
             "", "Config groups (GROUP=OPTION):"]
    for group in GROUPS:
        lines.append(f"  {group:<11} {', '.join(group_options(group))}")
    lines += ["", "Keys (KEY=VALUE), with the default config's value:"]
    descriptions = key_descriptions()
    width = max(len(k) for k in descriptions)
    for key, text in descriptions.items():
        value = OmegaConf.select(default, key, default=None)
        shown = "???" if value is None and key.endswith(".name") else repr(value)
        lines.append(f"  {key:<{width}} = {shown[:24]:<24}  {text}")
    lines += ["", "Also: --cfg job (print the composed config), -sc install=bash (tab completion "
              "for the `ganlab-train` command), --hydra-help (Hydra's own flags).",
              "Each group's options are the YAML files of conf/<group>/."]
    return "\n".join(lines)
