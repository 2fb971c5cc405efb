"""Bad input never crashes, never changes data, never races (docs/reliability.md).

Hypothesis drives option values through the real command line (in process) and file contents
through the readers; a table of hostile files runs the real `memaudit` command. Every refusal
must be exit 2 with one line on stderr and no traceback, leave nothing at --out, and leave the
inputs byte for byte as they were. No test here loads a model or imports torch itself."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memaudit.app.cli import main
from memaudit.app.requests import ScanRequest
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir, output_lock, write_json
from memaudit.common.model_files import looks_local
from memaudit.corpus.config import AuditConfig
from memaudit.corpus.sources import load_records, load_texts
from memaudit.probes.config import SCAN_SCHEMA_VERSION
from memaudit.training.config import TrainConfig
from memaudit.unlearning.config import AblateConfig, UnlearnConfig

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) by its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def assert_refused(exit_code: int, stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert exit_code == 2 and len(lines) == 1 and "Traceback" not in stderr, (exit_code, stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_nothing_at(out: Path) -> None:
    leftovers = [p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}.")]
    assert not leftovers and not out.with_name(out.name + ".partial").exists(), leftovers


# -- option values: the command line refuses exactly what the configs refuse -------------------------

# (command, option, the config the command builds from it, the line of a command whose value was fine)
OPTIONS = [
    *[
        (["train", "--data", "{missing}", "--out", "{out}"], opt, lambda v, f=field: TrainConfig(**{f: v}), "data dir")
        for opt, field in [
            ("--steps", "steps"),
            ("--batch-size", "batch_size"),
            ("--seq-len", "seq_len"),
            ("--lr", "lr"),
            ("--warmup-steps", "warmup_steps"),
            ("--seed", "seed"),
            ("--eval-every", "eval_every"),
            ("--checkpoint-every", "checkpoint_every"),
            ("--threads", "threads"),
        ]
    ],
    *[
        (
            ["unlearn", "m", "--data", "{missing}", "--out", "{out}"],
            opt,
            lambda v, f=field: UnlearnConfig(**{f: v}),
            "data dir",
        )
        for opt, field in [
            ("--steps", "steps"),
            ("--batch-size", "batch_size"),
            ("--lr", "lr"),
            ("--beta", "beta"),
            ("--gamma", "gamma"),
            ("--retain-weight", "retain_weight"),
            ("--eval-every", "eval_every"),
            ("--seed", "seed"),
        ]
    ],
    *[
        (
            ["ablate", "m", "--data", "{missing}", "--out", "{out}"],
            opt,
            lambda v, f=field: AblateConfig(**{f: v}),
            "data dir",
        )
        for opt, field in [("--ratio", "ratio"), ("--retain-docs", "retain_docs"), ("--seed", "seed")]
    ],
    *[
        (
            ["data", "build", "--corpus", "{missing}", "--out", "{out}"],
            opt,
            lambda v, f=field: AuditConfig(**{f: v}),
            "no such file",
        )
        for opt, field in [
            ("--members-per-level", "members_per_level"),
            ("--canaries-per-level", "canaries_per_level"),
            ("--n-valid", "n_valid"),
            ("--min-tokens", "min_tokens"),
            ("--max-tokens", "max_tokens"),
            ("--vocab-size", "vocab_size"),
            ("--seed", "seed"),
        ]
    ],
    (
        ["train", "--data", "{missing}", "--out", "{out}", "--sinks", "0.7,0.3"],
        "--sink-groups",
        lambda v: TrainConfig(sinks={"groups": v}),
        "data dir",
    ),
    *[
        (
            ["scan", "model", "m", "--audit", "{missing}", "--out", "{out}"],
            opt,
            lambda v, f=field: ScanRequest(model="m", out=Path("o"), audit=Path("a"), **{f: v}),
            "no such file",
        )
        for opt, field in [("--prefix-len", "prefix_len"), ("--suffix-len", "suffix_len"), ("--threads", "threads")]
    ],
]

VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.integers(-5, 70_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-2, 2).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e20", "1e400", "", " 3", "0x10", "1_000", "2.5", "-0", "true", "None"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
)


def _option(command: list[str], name: str) -> click.Option:
    group: click.Command = main
    for word in command:
        if not isinstance(group, click.Group) or word not in group.commands:
            break
        group = group.commands[word]
    return next(p for p in group.params if name in p.opts)


@FUZZ
@given(entry=st.sampled_from(OPTIONS), text=VALUES)
def test_option_values_are_refused_by_the_cli_exactly_when_the_api_refuses_them(entry, text, tmp_path):
    command, name, build, fine = entry
    out = tmp_path / "out"
    args = [a.format(missing=tmp_path / "missing.jsonl", out=out) for a in command] + [f"{name}={text}"]
    try:
        value = _option(command, name).type.convert(text, None, None)  # what click makes of the text
        build(value)
        refused = False
    except (click.BadParameter, MemauditError):
        refused = True
    result = CliRunner().invoke(main, args)
    line = assert_refused(result.exit_code, result.stderr)
    assert (name in line) == refused and (fine in line) != refused, (text, line)
    assert list(tmp_path.iterdir()) == []


def test_the_api_refuses_with_the_field_name_the_cli_with_the_flag(tmp_path):
    with pytest.raises(MemauditError, match=r"^lr must be a finite number > 0 and <= 1, got nan$"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(MemauditError, match=r"^steps must be an integer from 1 to 10000000, got 2.5$"):
        TrainConfig(steps=2.5)
    with pytest.raises(MemauditError, match="a scan needs exactly one audit set"):
        ScanRequest(model="m", out=tmp_path / "o", data_dir=tmp_path, audit=tmp_path / "a.jsonl")
    with pytest.raises(MemauditError, match="nonmembers go with `audit`"):
        ScanRequest(model="m", out=tmp_path / "o", data_dir=tmp_path, nonmembers=tmp_path / "n.txt")
    result = CliRunner().invoke(main, ["train", "--data", tmp_path, "--out", tmp_path / "m", "--lr", "nan"])
    assert_refused(result.exit_code, result.stderr, "--lr must be a finite number > 0 and <= 1, got nan")


# -- file contents: texts come back exactly, or the error names the file and the line ---------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
JSON_VALUE = st.one_of(TEXT, st.none(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
LINE = st.one_of(
    st.fixed_dictionaries({"text": JSON_VALUE}, optional={"repeats": st.integers(0, 5)}).map(
        lambda row: json.dumps(row, ensure_ascii=False)
    ),
    st.sampled_from(["", "   ", '{"text": "unterminated', "[1, 2]", "{'text': 'single quotes'}", '{"body": "x"}']),
)


@FUZZ
@given(lines=st.lists(LINE, max_size=8), bom=st.booleans(), crlf=st.booleans())
def test_jsonl_texts_come_back_exactly_or_the_error_names_the_line(lines, bom, crlf, tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\r\n" if crlf else "\n").join(lines).encode())
    expected, problem = [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            problem = f"texts.jsonl:{number}:"
            break
        if row["text"].strip():
            expected.append(row["text"])
    if problem is None:
        assert load_texts(path) == expected
    else:
        with pytest.raises(MemauditError, match=problem):
            load_texts(path)


@FUZZ
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), max_size=6))
def test_csv_texts_come_back_exactly(texts, tmp_path):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["id", "text"])
    writer.writerows([i, t] for i, t in enumerate(texts))
    path = tmp_path / "texts.csv"
    path.write_bytes(buffer.getvalue().encode())
    assert load_texts(path) == [t for t in texts if t.strip()]


def test_quoted_texts_keep_their_quotes_and_blank_rows_are_counted(tmp_path, capsys):
    quoted = [f'"Chapter {i}," said she.' for i in range(11)]
    rows = [{"text": t} for t in quoted] + [{"text": "  "}, {"text": ""}]
    path = tmp_path / "quoted.jsonl"
    path.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert load_texts(path) == quoted
    assert "skipped 2 rows with a blank 'text' (first: " in capsys.readouterr().err
    records = load_records(path)
    assert records[0].where == f"{path}:1" and records[0].fields == {"text": quoted[0]}


# -- hostile files through the real command ----------------------------------------------------------

SAFETENSORS_HEADER = json.dumps({"w": {"dtype": "F32", "shape": [256], "data_offsets": [0, 1024]}}).encode()


def _model_dir(root: Path, weights: bytes, config: str = '{"model_type": "gpt2"}') -> Path:
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(config)
    (model / "model.safetensors").write_bytes(weights)
    return model


def _results(root: Path, **changes) -> Path:
    run = root / "run"
    run.mkdir()
    results = {
        "schema_version": SCAN_SCHEMA_VERSION,
        "model": {"path": "m"},
        "metrics": {"memorization.member_loss": {"value": 2.0}},
    }
    (run / "results.json").write_text(json.dumps({**results, "sequences": [], **changes}))
    return run


def _audit(root: Path, *rows: str) -> Path:
    path = root / "audit.jsonl"
    path.write_text("".join(row + "\n" for row in rows))
    return path


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _data_dir(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    return data


def _scan(model: str | Path, audit: Path, out: Path) -> list:
    return ["scan", "model", model, "--audit", audit, "--out", out]


# name -> (build the inputs under ROOT and give the command's arguments, OUT, a part of the one error line)
HOSTILE = {
    "truncated safetensors": (
        lambda r, o: _scan(
            _model_dir(r, len(SAFETENSORS_HEADER).to_bytes(8, "little") + SAFETENSORS_HEADER + b"\0" * 10),
            _audit(r, '{"text": "a b c"}'),
            o,
        ),
        "model.safetensors: truncated",
    ),
    "not a safetensors file": (
        lambda r, o: _scan(_model_dir(r, b"<html>not found</html>"), _audit(r, '{"text": "a b c"}'), o),
        "truncated or not a safetensors file",
    ),
    "unreadable config.json": (
        lambda r, o: _scan(_model_dir(r, b"", config='{"model_type": '), _audit(r, '{"text": "a b c"}'), o),
        "config.json:1: not valid JSON",
    ),
    "empty gguf": (
        lambda r, o: _scan(_file(r / "model.gguf", b""), _audit(r, '{"text": "a"}'), o),
        "model.gguf: empty",
    ),
    "missing local model path": (
        lambda r, o: _scan("./models/typo", _audit(r, '{"text": "a"}'), o),
        "no such model dir",
    ),
    "number as text": (
        lambda r, o: _scan("gpt2", _audit(r, '{"text": "fine"}', '{"text": 12}'), o),
        "audit.jsonl:2: 'text' must be a string, got a number 12",
    ),
    "list as text": (
        lambda r, o: _scan("gpt2", _audit(r, '{"text": ["a", "b"]}'), o),
        "audit.jsonl:1: 'text' must be a string, got a list",
    ),
    "null text": (
        lambda r, o: _scan("gpt2", _audit(r, '{"text": "a"}', '{"text": null}'), o),
        "audit.jsonl:2: 'text' must be a string, got null",
    ),
    "bad JSON line": (
        lambda r, o: _scan("gpt2", _audit(r, '{"text": "a"}', "", '{"text": "b",}'), o),
        "audit.jsonl:3: not valid JSON",
    ),
    "fractional repeats": (
        lambda r, o: _scan("gpt2", _audit(r, '{"text": "a", "repeats": 2.5}'), o),
        "'repeats' must be a whole number",
    ),
    "results.json of schema 99": (
        lambda r, o: ["report", _results(r, schema_version=99), "--out", o],
        "newer memaudit",
    ),
    "results.json with a metric missing its value": (
        lambda r, o: ["report", _results(r, metrics={"extraction.exact_rate": {"n": 3}}), "--out", o],
        "metric 'extraction.exact_rate' has no value",
    ),
    "--out is an existing file": (
        lambda r, o: ["data", "build", "--out", _file(o, b"keep me"), "--corpus", _audit(r, '{"text": "a"}')],
        "already exists (a file)",
    ),
    "--out under /proc": (
        lambda r, o: ["data", "build", "--out", "/proc/memaudit/out", "--corpus", _audit(r, "{}")],
        "cannot write in /proc",
    ),
    "--repeats 1,,8": (lambda r, o: ["data", "build", "--out", o, "--repeats", "1,,8"], "--repeats"),
    "--repeats 99999999": (
        lambda r, o: ["data", "build", "--out", o, "--repeats", "99999999"],
        "--repeats must be distinct integers from 1 to 10000",
    ),
    "train --lr -1": (lambda r, o: ["train", "--data", _data_dir(r), "--out", o, "--lr", "-1"], "--lr must be"),
    "train --eval-every 0": (
        lambda r, o: ["train", "--data", _data_dir(r), "--out", o, "--eval-every", "0"],
        "--eval-every must be",
    ),
    "train --steps 1e20": (lambda r, o: ["train", "--data", _data_dir(r), "--out", o, "--steps", "1e20"], "'--steps'"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path):
    build, needle = HOSTILE[case]
    root, out = tmp_path / "inputs", tmp_path / "out"
    root.mkdir()
    args = [str(a) for a in build(root, out)]
    before, out_before = snapshot(root), out.read_bytes() if out.is_file() else None
    done = subprocess.run([sys.executable, "-m", "memaudit", *args], capture_output=True, text=True, timeout=60)
    assert_refused(done.returncode, done.stderr, needle)
    assert snapshot(root) == before
    if out_before is not None:  # an --out that was a file is left as it was
        assert out.read_bytes() == out_before and sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]
    else:
        assert_nothing_at(out)


def test_a_refused_command_imports_no_torch(tmp_path):
    """Refusals answer before torch is imported (that is what makes them instant)."""
    data = _data_dir(tmp_path)
    run = _results(tmp_path, schema_version=99)
    commands = [
        ["train", "--data", data, "--out", tmp_path / "m", "--lr", "-1"],
        ["train", "--data", tmp_path / "nowhere", "--out", tmp_path / "m"],
        ["data", "build", "--out", tmp_path / "d", "--repeats", "1,,8"],
        ["unlearn", "m", "--data", data, "--out", tmp_path / "u", "--lr", "inf"],
        ["ablate", "m", "--data", data, "--out", tmp_path / "a", "--ratio", "2"],
        ["remove-sinks", "./missing", "--out", tmp_path / "s"],
        ["scan", "model", "m", "--data", data, "--audit", tmp_path / "a.jsonl", "--out", tmp_path / "r"],
        ["scan", "model", "./missing", "--data", data, "--out", tmp_path / "r"],
        ["report", run, "--out", tmp_path / "c"],
    ]
    script = textwrap.dedent(
        """
        import json, sys
        from memaudit.app.cli import main
        codes = []
        for args in json.loads(sys.argv[1]):
            try:
                main(args)
            except SystemExit as e:
                codes.append(e.code)
        print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
        """
    )
    argv = json.dumps([[str(a) for a in c] for c in commands])
    done = subprocess.run([sys.executable, "-c", script, argv], capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [2] * len(commands), "torch": False}, done.stderr


# -- outputs: locked, exclusive, cleaned up after kill -9 ---------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from memaudit.common.fileio import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "half.txt").write_text("half written")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writer_blocks_no_one_and_its_temporaries_are_removed(tmp_path):
    out = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        with pytest.raises(MemauditError, match="being written by another memaudit process"), atomic_dir(out):
            pass
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert not out.exists() and {p.name.split(".")[-1] for p in tmp_path.iterdir()} == {"partial", "lock"}
    with atomic_dir(out) as tmp:
        (tmp / "whole.txt").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["whole.txt"]


def test_a_run_never_replaces_an_output_that_appeared_while_it_wrote(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(MemauditError, match="appeared while this run was writing it"), atomic_dir(out) as tmp:
        (tmp / "mine.txt").write_text("mine")
        out.mkdir()  # another run finished first
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_force_replaces_a_file_or_folder_whole_and_the_lock_is_exclusive(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    with atomic_dir(out, force=True) as tmp:
        (tmp / "newer.txt").write_text("newer")
    assert [p.name for p in out.iterdir()] == ["newer.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]
    with output_lock(out), pytest.raises(MemauditError, match="another memaudit process"), atomic_dir(out, force=True):
        pass


def test_json_is_standard_json(tmp_path):
    def refuse(constant: str):
        raise AssertionError(f"non-standard JSON constant {constant}")

    write_json(tmp_path / "m.json", {"loss": float("nan"), "lr": float("inf"), "steps": [1.5, float("-inf")]})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "loss": None,
        "lr": None,
        "steps": [1.5, None],
    }


def test_local_looking_model_paths_never_go_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for local in ("./m", "/abs/m", "~/m", "models/typo", "a/b/c", "model.gguf", "my model", "C:\\models\\m"):
        assert looks_local(local), local
    for hub in ("gpt2", "EleutherAI/pythia-70m", "Qwen/Qwen2.5-0.5B"):
        assert not looks_local(hub), hub
