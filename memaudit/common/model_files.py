"""What a model source is (a local model dir, a local GGUF file, or a hub id) and whether its
files are whole, decided with the standard library before torch or transformers see them: a
truncated weights file, an unreadable config or an empty GGUF is then one line naming the file,
and a mistyped local path never turns into a hub download."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import read_json, sha256_file

# Beside a model's weights, what memaudit knows of it: how it was trained and, for a MemSink model, how to
# re-attach its sinks. Written by memaudit.models.io and memaudit.memsinks, read by the loader.
META_FILE = "memaudit.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
GGUF_MAGIC = b"GGUF"
GGUF_HEADER_BYTES = 24  # magic, version (u32), tensor count (u64), metadata count (u64)
# A Hugging Face hub id: `name` or `owner/name`, letters, digits and . _ - (not at the start).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json")


@dataclass(frozen=True)
class ModelSource:
    """A model to load: `path` (a local dir, or a GGUF file) or else `hub_id`."""

    given: str
    path: Path | None = None
    hub_id: str | None = None

    @property
    def gguf_file(self) -> str | None:
        return self.path.name if self.path is not None and self.path.is_file() else None

    @property
    def load_from(self) -> str:
        """What transformers' from_pretrained takes: the dir (the GGUF file's dir) or the hub id."""
        if self.path is None:
            return self.hub_id
        return str(self.path.parent if self.gguf_file else self.path)


def looks_local(source: str) -> bool:
    """True unless `source` can only be a hub id. A path that starts with `.`, `/` or `~`, has
    two or more separators, ends like a weights file, or whose first part is an existing local
    folder (`models/standrd` when `models/` exists) is meant as a local path."""
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or source.lower().endswith(_FILE_SUFFIXES):
        return True
    if not _HUB_ID.fullmatch(source):  # spaces, backslashes, ...
        return True
    return "/" in source and Path(source.split("/")[0]).is_dir()


def locate_model(source: str | Path, *, allow_pickle: bool = False) -> ModelSource:
    """Where the model `source` is, with its files checked (`check_model_dir`, `check_gguf`).
    A local-looking source that does not exist is an error, never a hub id."""
    given = str(source)
    path = Path(given).expanduser()
    if path.is_dir():
        check_model_dir(path, allow_pickle=allow_pickle)
        return ModelSource(given, path=path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise MemauditError(f"{path}: a file that is not a .gguf; give a model dir, a .gguf file or a hub id")
        check_gguf(path)
        return ModelSource(given, path=path)
    if isinstance(source, Path) or looks_local(given):
        raise MemauditError(f"{given}: no such model dir or file (hub ids look like owner/name)")
    return ModelSource(given, hub_id=given)


def weights_sha256(source: ModelSource) -> str | None:
    """sha256 of a local model's weights as stored: the GGUF file, or a dir's safetensors file (its shards, in
    name order, hashed together), so a fine-tuned model's record says which base it started from and anyone can
    check it with sha256sum. None for a hub id (the record holds its revision instead)."""
    if source.path is None:
        return None
    files = [source.path] if source.gguf_file else sorted(source.path.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def check_model_dir(path: Path, *, allow_pickle: bool = False) -> None:
    """A model dir has a readable config.json and whole weights; pickled weights only if allowed."""
    if not (path / "config.json").is_file():
        raise MemauditError(f"{path}: not a model dir (no config.json)")
    read_json(path / "config.json")
    safe = [path / f for f in SAFE_WEIGHTS if (path / f).is_file()]
    has_pickle = any((path / f).is_file() for f in PICKLE_WEIGHTS)
    if not safe and not has_pickle:
        raise MemauditError(f"{path}: no model weights (expected model.safetensors)")
    if not safe and not allow_pickle:
        raise MemauditError(
            f"{path}: weights are pickled (pytorch_model.bin), which can run code on load; "
            "convert them to safetensors, or pass `allow_pickle` if you trust the source"
        )
    for weights in safe:
        if weights.name.endswith(".index.json"):
            shards = read_json(weights).get("weight_map")
            if not isinstance(shards, dict) or not shards:
                raise MemauditError(f"{weights}: no 'weight_map' of tensors to shard files")
            for shard in sorted(set(map(str, shards.values()))):
                if not (path / shard).is_file():
                    raise MemauditError(f"{weights}: names shard {shard}, which is missing from {path}")
                check_safetensors(path / shard)
        else:
            check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """The file holds what its header says: an 8-byte header length, a JSON header, and every
    tensor's bytes. A copy cut short or a file of something else is refused here."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        header_len = int.from_bytes(head, "little") if len(head) == 8 else None
        if header_len is None or header_len > size - 8:
            raise MemauditError(f"{path}: truncated or not a safetensors file ({size} bytes); copy or save it again")
        try:
            header = json.loads(f.read(header_len))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            needed = 8 + header_len + max((int(e) for e in ends), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise MemauditError(f"{path}: corrupt safetensors header; copy or save the model again") from None
    if needed > size:
        raise MemauditError(
            f"{path}: truncated ({size} bytes, its header describes {needed}); copy or save the model again"
        )


def check_gguf(path: Path) -> None:
    """A GGUF file starts with its magic and a whole header."""
    with open(path, "rb") as f:
        head = f.read(GGUF_HEADER_BYTES)
    if len(head) < GGUF_HEADER_BYTES or not head.startswith(GGUF_MAGIC):
        what = "empty" if not head else "truncated" if head.startswith(GGUF_MAGIC) else "not a GGUF file"
        raise MemauditError(f"{path}: {what} ({path.stat().st_size} bytes); copy or convert the model again")
