"""Small file helpers shared by every reader and writer: atomic outputs, strict JSON, JSONL with
line-precise errors, content hashes. Standard library only.

Outputs are built in a hidden temporary sibling (`.NAME.XXXXXXXX.partial`) and renamed into
place, so a failure never leaves a half-written folder or file behind. While it writes, a
process holds an exclusive lock on `.NAME.lock` beside the output (an OS lock, released even
when the process is killed), so two runs never write one output at once; the holder of the lock
also removes temporaries that killed runs left behind. An existing output is replaced only with
`force`, and never by a rename that could silently win a race: without `force` the final rename
fails if anything appeared at the output meanwhile. docs/reliability.md has the whole contract."""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from memaudit.common.errors import MemauditError

_UMASK = os.umask(0)
os.umask(_UMASK)
_TEMP = ".partial"


def _temp_pattern(target: Path) -> re.Pattern:
    """Names of the temporaries of `target` (ours, and the 8-character mkdtemp names of older
    versions). The random part has no dot, so `a`'s temporaries never match `a.b`'s."""
    return re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(_TEMP)}")


def _new_temp(target: Path, make: bool) -> Path:
    """A fresh temporary path beside `target`: created as a folder when `make`, else just named."""
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{_TEMP}"
        if not make:
            if not os.path.lexists(tmp):
                return tmp
            continue
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        os.chmod(tmp, 0o777 & ~_UMASK)
        return tmp


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _os_error(what: str, path: Path, e: OSError) -> MemauditError:
    return MemauditError(f"{path}: cannot {what} ({e.strerror or e}); choose another location")


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the exclusive lock on `target` (a file or folder about to be written): another process
    asking for it is refused at once. Temporaries of `target` left by killed runs are removed
    once the lock is held (their writers, holding the lock, would be alive). Public so that a
    long run can hold it from start to end."""
    target = Path(target)
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except OSError as e:
            raise _os_error("create a lock file beside it", target, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MemauditError(
                f"{target} is being written by another memaudit process; wait for it to finish or choose another output"
            ) from None
        # The previous holder may have removed the file between our open and our lock: then
        # the lock is on a file nobody else can see, and must be taken again.
        try:
            now = os.stat(lock_path)
        except FileNotFoundError:
            now = None
        held = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        pattern = _temp_pattern(target)
        for stale in target.parent.iterdir():
            if pattern.fullmatch(stale.name):
                _remove(stale)
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def check_out(out: Path, *, force: bool = False, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Refuse an output location before any work: one that is, holds or sits inside an input
    (writing it would change the input), one that exists without `force`, and one whose folder
    cannot be created or written (a file on the way, a read-only or virtual file system).
    Creates nothing; returns `out` as a Path."""
    if not str(out).strip():
        raise MemauditError("the output path is empty; name a file or folder")
    out = Path(out)
    where = out.resolve()
    if where == Path.cwd() or where in Path.cwd().parents:
        raise MemauditError(f"{out} is or holds the current folder; write elsewhere")
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if where == source or where in source.parents or source in where.parents:
            raise MemauditError(
                f"{out} is, holds or sits inside the input {given}; memaudit never writes over its inputs"
            )
    if os.path.lexists(out) and not force:
        kind = "a file" if not out.is_dir() else "a folder"
        raise MemauditError(f"{out} already exists ({kind}); write elsewhere, or pass `force` to replace it")
    ancestor = out.parent.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MemauditError(f"{out}: {ancestor} is a file, so no folder can be made there; choose another location")
    probe = _new_temp(ancestor / "memaudit-write-check", make=False)
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise _os_error(f"write in {ancestor}", out, e) from None
    return out


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error("create its folder", path, e) from None


def _commit(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished temporary `tmp` to `out`. Without `force` this refuses if anything is
    at `out` now (another run may have finished first). With `force` the old output is moved
    aside first and restored if the rename fails, then deleted."""
    if not force:
        if os.path.lexists(out):
            raise MemauditError(f"{out} appeared while this run was writing it (another run?); nothing was replaced")
        try:
            os.rename(tmp, out)
        except OSError as e:  # a folder that appeared meanwhile and is not empty
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise MemauditError(f"{out} appeared while this run was writing it; nothing was replaced") from None
            raise _os_error("be written", out, e) from None
        return
    old = _new_temp(out, make=False) if os.path.lexists(out) else None
    try:
        if old is not None:
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
            raise
    except OSError as e:
        raise _os_error("be replaced", out, e) from None
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes `out` only if the block succeeds. An existing
    `out` (folder or file) is refused unless `force`; with `force` it is replaced whole."""
    out = check_out(out, force=force)
    _make_parent(out)
    with output_lock(out):
        tmp = _new_temp(out, make=True)
        try:
            yield tmp
            _commit(tmp, out, force)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary sibling, then rename), replacing what was there."""
    path = Path(path)
    if path.is_dir():
        raise MemauditError(f"{path} is a folder; give a file name")
    _make_parent(path)
    with output_lock(path):
        tmp = _new_temp(path, make=False)
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as e:
            raise _os_error("be written", path, e) from None
        finally:
            tmp.unlink(missing_ok=True)


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity (in dicts, lists, tuples) replaced by None: JSON has no
    such numbers, and a reader must see "not measured", not a parse error or a fake value."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Standard JSON (no NaN, no Infinity: `finite` makes them null), ending in a newline."""
    return json.dumps(finite(value), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Path, value: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json_text(value, indent))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json_text(r, indent=None) for r in rows))


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise MemauditError(f"{path}: no such file")
    if path.is_dir():
        raise MemauditError(f"{path} is a folder; give a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise MemauditError(f"{path}: cannot read it ({e.strerror or e})") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped); a decoding error names the
    file and the line."""
    data = _read_bytes(path)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise MemauditError(f"{path}:{line}: not UTF-8 text ({e.reason}); re-encode the file as UTF-8") from None


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, as `read_text` reads it. Only \\n (or \\r\\n) ends a line: a
    U+2028 or a form feed inside a line is text, not a line break."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, the JSON object on it) for each non-blank line; an error names the file and
    the line. The whole file is decoded first, so a non-UTF-8 file fails before any row."""
    for i, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MemauditError(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise MemauditError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}")
        yield i, row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON object of each non-blank line (`iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file holding one object."""
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise MemauditError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise MemauditError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: Path) -> str:
    """One hash over a folder's files (names and contents), for 'which model produced this'."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
