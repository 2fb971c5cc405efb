"""SARIF 2.1.0 output (`--sarif FILE` on `scan model` and `report`): the leaking audit records of a
results document as static-analysis results, for GitHub code scanning and any SARIF viewer, built
from the document alone. docs/gates.md ("Code scanning") is the user's guide.

- One result per leaking member record and model (triage.py says when a record leaks, and by
  which thresholds), riskiest first, at the record's place: its audit file (relative to the
  repository root, else absolute) and line, from its row's `source_file` and `source_line`.
- One rule per leak family (extraction, canary exposure, membership inference), with help text.
  A result's rule is the first family it leaks through in that order; its message names all.
- Its level is `error` when a `--fail-on` gate of a family it leaks through tripped for that
  model, else `warning`.
- A record is named by its doc_id, which a redacted document holds as a keyed hash; of its texts
  only a short excerpt of a member's prefix is written, and only when the document is not
  redacted (never a canary's: its prefix may hold the secret)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_write_text, check_out, json_text
from memaudit.report.document import runs
from memaudit.report.triage import DEFAULT_EXPOSURE_BITS, EXPOSURE_FPR, FAMILIES, MEMBERSHIP_FPR, Assessment, triage

SARIF_VERSION = "2.1.0"
# The OASIS Standard's schema (with its approved errata), which tests/data/sarif-schema-2.1.0.json copies.
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"  # the uriBaseId of every audit file under the repository root
FINGERPRINT = "memauditRecord/v1"
MAX_RESULTS = 25_000  # GitHub code scanning rejects a run with more; the riskiest are kept, the rest counted
EXCERPT = 48  # characters of a member's prefix a message shows when the document is not redacted
DOCS = "docs/gates.md (Code scanning)"


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    short: str
    full: str
    help: str

    def to_sarif(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "shortDescription": {"text": self.short},
            "fullDescription": {"text": self.full},
            "help": {"text": self.help, "markdown": self.help},
            "defaultConfiguration": {"level": "warning"},
            "properties": {"tags": ["privacy", "memorization"]},
        }


_AFTER = (
    "What to do: remove or deduplicate the record in the training data and retrain, or remove it from "
    "the model (MemSink removal, `memaudit unlearn`), then scan again. A `--fail-on` gate on this family "
    f"makes these results errors when it trips; see {DOCS}."
)
RULES = {
    "extraction": Rule(
        "memaudit/extraction",
        "VerbatimExtraction",
        "A training record is extracted verbatim.",
        "Greedy decoding from the record's true prefix reproduces its true suffix token for token: anyone who "
        "knows the start of this training text can make the model emit the rest.",
        "The model emits this member record verbatim: given its first P tokens (the suite's prefix length), "
        "greedy decoding continues with its next S tokens exactly. Extraction is the clearest sign of "
        "memorization and the one that puts the text itself in users' hands. " + _AFTER,
    ),
    "exposure": Rule(
        "memaudit/canary-exposure",
        "CanaryExposure",
        "A planted canary's secret is exposed.",
        "The model ranks this canary's true secret far above random secrets of the same shape (exposure, "
        "Carlini et al. 2019): what it learned of the canary, it would learn of a real secret seen as often.",
        "Exposure is log2|R| - log2(rank) bits, the rank of the canary's true secret among all secrets of its "
        "space R by the likelihood the model gives the sentence. A never-trained canary exceeds "
        f"{DEFAULT_EXPOSURE_BITS:.2f} bits with probability {EXPOSURE_FPR:.0%}; above the threshold (a "
        f"`privacy.exposure` gate's, else {DEFAULT_EXPOSURE_BITS:.2f} bits) the model has memorized the secret. "
        + _AFTER,
    ),
    "membership": Rule(
        "memaudit/membership-inference",
        "MembershipInference",
        "A training record is identified as training data.",
        "A membership-inference attack scores this member record above the threshold that flags only 1% of "
        "held-out non-members: an attacker can tell it was in the training data.",
        "For each membership attack the scan ran (loss, zlib, Min-K%, Min-K%++, the reference attack with a "
        "reference model, and any other `mia_<attack>` score), the threshold is the score that at most 1% "
        "of the held-out non-members exceed (with fewer than 100 non-members: their highest score). A record "
        "above it is flagged; the result names the attacks. Several attacks flag more non-members together "
        "than each alone: the run's properties give that rate (membershipUnionFalsePositiveRate). " + _AFTER,
    ),
}
assert tuple(RULES) == FAMILIES


def repository_root(cwd: Path | None = None) -> Path:
    """The nearest folder from the working directory up that holds `.git`, else the working directory."""
    cwd = Path(cwd or Path.cwd()).absolute()
    return next((d for d in (cwd, *cwd.parents) if (d / ".git").exists()), cwd)


def artifact_location(path: str | Path, root: Path, cwd: Path) -> dict:
    """A file's SARIF artifactLocation: relative to `root` (uriBaseId %SRCROOT%) when it lies under
    it, else its absolute file URI. A relative path is taken from `cwd`."""
    where = Path(os.path.normpath(Path(cwd) / path))
    for candidate, base in ((where, root), (where.resolve(), root.resolve())):
        try:
            relative = candidate.relative_to(base)
        except ValueError:
            continue
        return {"uri": quote(relative.as_posix()), "uriBaseId": SRCROOT}
    return {"uri": where.as_uri()}


def _source(run: dict, row: dict) -> tuple[str | None, int | None]:
    """A row's audit file and line; for a results document older than the source columns, the
    run's audit file (or its data dir's audit.jsonl) and no line."""
    line = row.get("source_line")
    line = line if isinstance(line, int) and not isinstance(line, bool) and line >= 1 else None
    if row.get("source_file"):
        return str(row["source_file"]), line
    data = run.get("data") or {}
    if data.get("audit"):
        return str(data["audit"]), None
    if data.get("dir"):
        return str(Path(data["dir"]) / "audit.jsonl"), None
    return None, None


def _record(a: Assessment, redacted: bool) -> str:
    """How a message names a record: its doc id (a keyed hash when redacted), kind and repeat
    level, and, only when not redacted, the start of a member's prefix (never a canary's)."""
    row = a.row
    canary = row.get("kind") == "canary"
    seen = f"seen {row['repeats']}x in training" if isinstance(row.get("repeats"), int) else "a member"
    text = (
        f"canary {row['doc_id']} ({seen})" if canary else f"member record {row['doc_id']} ({row.get('kind')}, {seen})"
    )
    prefix = row.get("prefix")
    if not redacted and not canary and isinstance(prefix, str) and prefix.strip():
        excerpt = " ".join(prefix.split())
        text += f", starting “{excerpt[:EXCERPT]}{'…' if len(excerpt) > EXCERPT else ''}”"
    return text


def _evidence(a: Assessment, run: dict, exposure_bits: float) -> list[str]:
    suite = run.get("suite") or {}
    p, s = suite.get("prefix_len", "P"), suite.get("suffix_len", "S")
    out = []
    if a.extracted:
        out.append(f"extracted verbatim (greedy decoding from its first {p} tokens reproduces the next {s})")
    if a.exposed:
        out.append(f"canary exposure {a.exposure:.2f} bits, above {exposure_bits:.2f}")
    if a.flagged_by:
        out.append(
            f"flagged by membership inference at {MEMBERSHIP_FPR:.0%} false positives ({', '.join(a.flagged_by)})"
        )
    return out


def _result(a: Assessment, run: dict, tripped: frozenset[str], exposure_bits: float, where: dict, redacted: bool):
    families = a.families
    rule = RULES[families[0]]
    file, line = where["file"], where["line"]
    location: dict = {"physicalLocation": {"artifactLocation": where["artifact"]}}
    if line is not None:
        location["physicalLocation"]["region"] = {"startLine": line}
    record = _record(a, redacted)
    message = f"{record[0].upper()}{record[1:]} leaks from {a.model}: " + "; ".join(_evidence(a, run, exposure_bits))
    key = "\0".join(map(str, (a.model, where["artifact"]["uri"], line if line is not None else a.row["doc_id"])))
    membership = {
        "flaggedBy": list(a.flagged_by),
        "scores": a.scores,
        "nonmemberRank": a.rank,
        "rankAttack": a.rank_attack,
    }
    return {
        "ruleId": rule.id,
        "ruleIndex": FAMILIES.index(families[0]),
        "level": "error" if tripped & set(families) else "warning",
        "message": {"text": message + "."},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT: hashlib.sha256(key.encode()).hexdigest()[:32]},
        "properties": {
            "model": a.model,
            "families": list(families),
            "docId": a.row["doc_id"],
            "kind": a.row.get("kind"),
            "repeats": a.row.get("repeats"),
            "sourceFile": file,
            "sourceLine": line,
            "extracted": a.extracted,
            "exposureBits": a.exposure,
            "membership": membership if a.scores else None,
        },
    }


def sarif_log(doc: dict, cwd: Path | None = None) -> dict:
    """The SARIF 2.1.0 log of a results document (a scan's or a comparative report's): one result
    per leaking member record and model, errors and then the riskiest first (at most MAX_RESULTS;
    `resultsLeftOut` in the run's properties counts the rest). Relative audit paths are taken from
    `cwd` (default: the working directory) and written relative to its repository root."""
    cwd = Path(cwd or Path.cwd()).absolute()
    root = repository_root(cwd)
    found = triage(doc)
    redacted = bool(doc.get("redacted"))
    by_label = {run["label"]: run for run in runs(doc)}
    results = []
    for rt in found.runs:
        run = by_label[rt.label]
        for a in rt.leaking:
            file, line = _source(run, a.row)
            artifact = artifact_location(file, root, cwd) if file else {"uri": "results.json"}
            where = {"file": file, "line": line, "artifact": artifact}
            level_error = bool(rt.tripped & set(a.families))
            results.append((level_error, a.risk, _result(a, run, rt.tripped, found.exposure_bits, where, redacted)))
    results.sort(key=lambda r: (r[0], r[1]), reverse=True)  # stable: ties keep model and document order
    left_out = max(0, len(results) - MAX_RESULTS)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "memaudit",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": [RULES[f].to_sarif() for f in FAMILIES],
                    }
                },
                "originalUriBaseIds": {
                    SRCROOT: {
                        "uri": root.as_uri().rstrip("/") + "/",
                        "description": {"text": "The repository root (or working directory) memaudit ran in."},
                    }
                },
                "results": [r for _, _, r in results[:MAX_RESULTS]],
                "properties": {
                    "redacted": redacted,
                    "models": [rt.label for rt in found.runs],
                    "exposureThresholdBits": found.exposure_bits,
                    "exposureThresholdSource": found.exposure_source,
                    "membershipFalsePositiveRate": MEMBERSHIP_FPR,
                    "membershipThresholds": {rt.label: rt.thresholds for rt in found.runs},
                    "membershipNonmembers": {rt.label: rt.nonmembers for rt in found.runs},
                    "membershipChanceRate": {rt.label: rt.chance for rt in found.runs},
                    "membershipUnionFalsePositiveRate": {rt.label: rt.union_fpr for rt in found.runs},
                    "leakingRecords": {rt.label: rt.counts() for rt in found.runs},
                    "resultsLeftOut": left_out,
                    "gates": doc.get("gates") or [],
                },
            }
        ],
    }


def check_sarif(path: Path, *, out: Path, inputs: list) -> Path:
    """Refuse a `--sarif` location before any work: an input (or inside one), a folder, the
    output folder itself, or a place that cannot be written. An existing file is replaced."""
    path = Path(path)
    if path.is_dir():
        raise MemauditError(f"sarif {path} is a folder; name a file, e.g. {path / 'memaudit.sarif'}")
    if path.absolute() == Path(out).absolute():
        raise MemauditError(f"sarif {path} is `out` itself; name a file, e.g. {path / 'memaudit.sarif'}")
    try:
        return check_out(path, force=True, inputs=inputs)
    except MemauditError as e:
        raise MemauditError(f"sarif {e}") from None


def write_sarif(doc: dict, path: Path, cwd: Path | None = None) -> Path:
    """Write `sarif_log(doc)` to `path`, atomically (replacing an existing file)."""
    atomic_write_text(Path(path), json_text(sarif_log(doc, cwd)))
    return Path(path)
