"""Rewrite docs/metrics.md from the metric registry (memaudit/probes/registry.py).

Run after adding or changing a metric: `python scripts/gen_metrics_doc.py`. tests/test_registry.py
fails while the committed file differs from what this writes."""

from pathlib import Path

from memaudit.probes.listing import metrics_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"

if __name__ == "__main__":
    DOC.write_text(metrics_markdown(), encoding="utf-8")
    print(f"wrote {DOC}")
