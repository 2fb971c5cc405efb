"""`memaudit remove-sinks` on model dirs: a MemSink model dir in, a copy with sink units deleted out.
The unit surgery itself is `memaudit.memsinks.prune_sink_units`; this module resolves the ids a user
names against the training data (`memaudit.corpus.audit.resolve_sink_ids`), keeps `memaudit.json`
true to what the copy is, and says what a deletion by id under the hash and sparse schemes, whose
masks overlap, really deletes."""

from __future__ import annotations

from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir
from memaudit.corpus.audit import AuditSet, resolve_sink_ids, sink_id
from memaudit.corpus.sources import parse_ids as parse_ids  # `--ids`, parsed where the command line reads it
from memaudit.memsinks.surgery import prune_sink_units
from memaudit.models.checks import check_model_job
from memaudit.models.io import load_model, save_model


def remove_sinks(
    model_dir: Path,
    out: Path,
    *,
    ids: list[int | str] | None = None,
    data_dir: Path | None = None,
    force: bool = False,
) -> dict:
    """`memaudit remove-sinks`: write a copy of a MemSink model dir with sink units deleted.

    ids=None deletes the whole pool: the result is a plain, smaller HF model equal to `off` mode.
    ids given deletes only those documents' sinks; the copy keeps the others' (memaudit.json
    records the kept units, and memaudit's loader re-attaches them). The ids must be documents
    the model was trained on (train.jsonl of `data_dir`, default the data dir it was trained on),
    or, for a data dir built with `--id-field`, the owners of its rows (e.g. user ids).
    A model sink fine-tuned with new units gets its base model's config back whole."""
    model_dir, out = Path(model_dir), Path(out)
    check_model_job(out, model=model_dir, data_dir=data_dir, force=force)
    loaded = load_model(model_dir)
    if loaded.sinks is None:
        raise MemauditError(f"{model_dir}: not a MemSink model (its memaudit.json records no sinks)")
    keep_ids = None
    if ids is not None:
        source = Path(data_dir or loaded.meta.get("data", {}).get("dir", ""))
        if not (source / "train.jsonl").is_file():
            raise MemauditError(f"ids need the training data to check them against: pass `data_dir`; tried {source}")
        data = AuditSet.load(source)
        ids = resolve_sink_ids(ids, data)
        keep_ids = sorted({sink_id(r) for r in data.train} - set(ids))
    report = prune_sink_units(loaded.model, loaded.sinks, ids=ids, keep_ids=keep_ids)
    meta = {**loaded.meta, "kind": "memsink-removed" if ids is None else "memsink-pruned", "base_model": str(model_dir)}
    summary = {k: v for k, v in report.items() if k != "kept_sink_units"}
    if ids is None:
        meta["sinks"] = None  # a plain model now: nothing to re-attach
        for name, value in loaded.meta.get("init", {}).get("base_mlp", {}).items():  # new:N: the base's own value
            setattr(loaded.model.config, name, value)
        meta["removed_sinks"] = summary
    else:
        meta["sink_pool"] = {"pool_size": report["pool_size"], "kept_sink_units": report["kept_sink_units"]}
        meta["removed_sinks"] = {**summary, "ids": sorted(ids)}
    with atomic_dir(out, force=force) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp, meta)
    return summary


def hash_scheme_note(report: dict, ids: list[int | str] | None) -> str | None:
    """What a deletion by id really deletes where documents' masks overlap, for whoever shows the result of
    `remove_sinks` (its `report`). Under the hash scheme the deletion covers more of the pool than the ids' own
    share and takes part of nearly every other document's sinks with it; under the sparse scheme it takes the
    units that other ids share with the deleted ones (about k * k / pool each). None for the whole pool (`ids`
    None) and under the disjoint scheme, whose deletion is exact."""
    scheme = report["sink_config"]["scheme"]
    if not ids or scheme == "disjoint" or report.get("keep_ids_sinks_removed_mean") is None:  # None: no one stays
        return None
    if scheme == "sparse":
        return (
            f"sparse scheme: the deletion removes {report['removed']} units ({report['pool_fraction_removed']:.1%} of "
            f"the pool); {report['keep_ids_hit']} of the documents that stay shared some of them and lose up to "
            f"{report['keep_ids_sinks_removed_max']:.1%} of their sinks (on average over all that stay "
            f"{report['keep_ids_sinks_removed_mean']:.2%})"
        )
    return (
        f"hash scheme: the deletion covers {report['pool_fraction_removed']:.1%} of the pool and removes on average "
        f"{report['keep_ids_sinks_removed_mean']:.1%} (at most {report['keep_ids_sinks_removed_max']:.1%}) of the sinks "
        "of the documents that stay; use --sink-scheme disjoint for targeted deletion"
    )
