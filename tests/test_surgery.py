"""Deleting sink units: the whole pool gives a plain HF model equal to `off` mode; deleting some ids' sinks keeps
the others working, and the report says how much of the pool (and of the kept ids' sinks) went."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from memaudit.common.errors import MemauditError
from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.masks import disjoint_mask, hash_mask
from memaudit.memsinks.sinks import Sinks
from memaudit.memsinks.surgery import prune_sink_units, reattach_sinks
from memaudit.models.removal import hash_scheme_note, parse_ids
from tests.helpers import ARCHS, TOKENS, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

DISJOINT = SinkConfig(scheme="disjoint", groups=4)


def logits(model: torch.nn.Module, sinks: Sinks | None = None, doc_id: int | None = None) -> torch.Tensor:
    """Logits of TOKENS; with doc_id, in `own` mode for that one document."""
    if doc_id is not None:
        sinks.mode = "own"
        sinks.set_doc_ids(torch.full((TOKENS.shape[0], 1), doc_id))
    with torch.no_grad():
        return model(TOKENS).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_deleting_the_pool_gives_a_plain_model_equal_to_off_mode(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    sinks = Sinks(model, SinkConfig())
    sinks.mode = "off"
    expected = logits(model)
    report = prune_sink_units(model, sinks)
    assert report["units_before"] == sinks.n_hidden
    assert report["units_after"] == sinks.n_shared == report["units_before"] - report["removed"]
    assert report["removed"] == sinks.n_sink and report["pool_fraction_removed"] == 1.0
    assert report["kept_sink_units"] == [] and report["pool_size"] == sinks.n_sink
    assert torch.allclose(logits(model), expected, atol=1e-5, rtol=0)  # hooks are gone, the units too
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.num_parameters() == model.num_parameters()
    assert (logits(reloaded) - expected).abs().max().item() <= 1e-4


def test_deleting_one_group_leaves_other_groups_intact() -> None:
    model = tiny_model("llama")
    sinks = Sinks(model, DISJOINT)
    deleted, other = [1, 5], 2  # group 1 twice; group 2
    before = logits(model, sinks, other)
    sinks.mode = "off"
    before_off = logits(model)
    report = prune_sink_units(model, sinks, deleted, keep_ids=[2, 3, 4, 6, 9])
    union = disjoint_mask(torch.tensor(deleted), sinks.n_sink, 0.3, 4).any(0)
    assert report["removed"] == union.sum().item() > 0
    assert report["kept_sink_units"] == (~union).nonzero().squeeze(1).tolist()
    assert 0 < report["keep_ids_sinks_removed_max"] < 1  # id 9 shares group 1; ids 2, 3, 4, 6 lose nothing
    assert report["keep_ids_sinks_removed_mean"] == pytest.approx(report["keep_ids_sinks_removed_max"] / 5)

    kept = reattach_sinks(model, report)
    assert (kept.n_shared, kept.n_sink) == (sinks.n_shared, sinks.n_sink - report["removed"])
    assert torch.equal(kept.mask_for_ids([other, 9]), sinks.mask_for_ids([other, 9])[:, ~union])
    assert torch.allclose(logits(model, kept, other), before, atol=1e-5, rtol=0)
    kept.mode = "off"
    assert torch.allclose(logits(model), before_off, atol=1e-5, rtol=0)
    assert torch.allclose(logits(model, kept, deleted[0]), before_off, atol=1e-5, rtol=0)  # its sinks are gone


def test_pruning_twice_keeps_the_original_numbering() -> None:
    model = tiny_model("gpt2")
    sinks = Sinks(model, DISJOINT)
    before = logits(model, sinks, 3)
    sinks.mode = "off"
    before_off = logits(model)
    first = prune_sink_units(model, sinks, [1])
    with pytest.raises(MemauditError, match="pruned already"):
        prune_sink_units(model, sinks, [2])
    second = prune_sink_units(model, reattach_sinks(model, first), [2])
    union = disjoint_mask(torch.tensor([1, 2]), sinks.n_sink, 0.3, 4).any(0)
    assert second["pool_size"] == sinks.n_sink
    assert second["kept_sink_units"] == (~union).nonzero().squeeze(1).tolist()
    kept = reattach_sinks(model, second)
    assert torch.allclose(logits(model, kept, 3), before, atol=1e-5, rtol=0)
    with pytest.raises(MemauditError, match="already has sinks attached"):
        Sinks(model, DISJOINT)
    prune_sink_units(model, kept)
    assert torch.allclose(logits(model), before_off, atol=1e-5, rtol=0)


def test_hash_scheme_deletion_reports_coverage_and_overlap() -> None:
    model = tiny_model("gpt2")
    sinks = Sinks(model, SinkConfig())
    deleted, keep = [11, 12, 13], list(range(100, 140))
    report = prune_sink_units(model, sinks, deleted, keep_ids=keep)
    union = hash_mask(torch.tensor(deleted), sinks.n_sink, 0.3).any(0)
    kept_masks = hash_mask(torch.tensor(keep), sinks.n_sink, 0.3).float()
    overlap = (kept_masks @ union.float()) / kept_masks.sum(1)
    assert report["pool_fraction_removed"] == pytest.approx(union.float().mean().item())
    assert report["keep_ids_sinks_removed_mean"] == pytest.approx(overlap.mean().item())
    assert report["keep_ids_sinks_removed_max"] == pytest.approx(overlap.max().item())
    assert report["units_after"] == sinks.n_hidden - union.sum().item()
    note = hash_scheme_note(report, deleted)
    assert note.startswith(f"hash scheme: the deletion covers {report['pool_fraction_removed']:.1%} of the pool")
    assert hash_scheme_note(report, None) is None
    assert hash_scheme_note({**report, "sink_config": DISJOINT.to_dict()}, deleted) is None  # exact there
    # The hash scheme is not for targeted deletion: 20 ids already cover almost the whole pool.
    fresh = tiny_model("gpt2")
    assert prune_sink_units(fresh, Sinks(fresh, SinkConfig()), list(range(1, 21)))["pool_fraction_removed"] > 0.9


def test_ids_parse_as_document_ids_or_owners() -> None:
    assert parse_ids("12, 7,alice ,x9") == [12, 7, "alice", "x9"]


def test_prune_refuses_bad_requests() -> None:
    model = tiny_model("gpt2")
    with pytest.raises(MemauditError, match="attached to another model"):
        prune_sink_units(model, Sinks(tiny_model("gpt2"), SinkConfig()))
    sinks = Sinks(model, SinkConfig())
    with pytest.raises(MemauditError, match="ids is empty"):
        prune_sink_units(model, sinks, [])
    with pytest.raises(MemauditError, match=r"ids \[2\] are both deleted and kept"):
        prune_sink_units(model, sinks, [1, 2], keep_ids=[2, 3])
    with pytest.raises(MemauditError, match="needs both pool_size and kept_sink_units"):
        Sinks(model, SinkConfig(), kept_sink_units=[1, 2])
