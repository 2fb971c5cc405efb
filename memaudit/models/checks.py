"""What a job that writes a model dir (`train`, `unlearn`, `ablate`, `remove_sinks`) reads and
writes, checked before torch is imported. Each of those functions checks itself with it first,
and the command line calls it before it imports them, so a refused job answers at once, from the
command line and the Python API alike, with the same message."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from memaudit.common.fileio import check_out
from memaudit.common.model_files import locate_model
from memaudit.corpus.audit import AuditSet


def check_model_job(
    out: str | Path,
    *,
    model: str | Path | None = None,
    data_dir: str | Path | None = None,
    inputs: Iterable[str | Path | None] = (),
    force: bool = False,
) -> None:
    """`data_dir` looks like a data dir, `model` (a model dir, GGUF file or hub id) exists with
    whole files, and `out` may be written: it is none of the inputs (the model, the data dir and
    `inputs`) and holds none of them, and it is not there unless `force` (fileio.check_out)."""
    if data_dir is not None:
        AuditSet.check(data_dir)
    if model is not None:
        locate_model(model)
    check_out(out, force=force, inputs=[model, data_dir, *inputs])
