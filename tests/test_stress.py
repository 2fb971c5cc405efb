"""Stress tests of removal (memaudit stress): the quantizer's round-trip properties on random
tensors, attack specs (parsed before torch, refused in one line with a suggestion), the forget-half
split, the robustness metrics on hand-made curves, gates on a value past its budget, and one stress
run of a tiny model end to end, read back by `memaudit report`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import memaudit.stress.run as stress_run
from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.probes.config import FAMILIES
from memaudit.probes.inputs import MetricInputs
from memaudit.probes.registry import MIN_CLOSED, compute_all, get_metric
from memaudit.report.gate import evaluate_gates
from memaudit.report.render import fmt_entry
from memaudit.report.robustness import recover_text
from memaudit.stress.attacks import QUANT_BITS, RELEARN_SETS, Attack, StressConfig, forget_half, parse_attack
from memaudit.stress.quant import fake_quantize, quantize_model
from memaudit.stress.run import stress

# -- the quantizer ---------------------------------------------------------------------------------

weights = arrays(
    "float32",
    st.tuples(st.integers(1, 6), st.integers(1, 300)),
    elements=st.floats(-4, 4, width=32, allow_nan=False, allow_infinity=False),
)
bits = st.sampled_from(sorted(QUANT_BITS.values()))
group_sizes = st.sampled_from([1, 7, 128])


def _groups(w: torch.Tensor, group_size: int) -> list[torch.Tensor]:
    return [w[:, start : start + group_size] for start in range(0, w.shape[1], group_size)]


@settings(max_examples=60, deadline=None)
@given(weights, bits, group_sizes)
def test_every_entry_moves_at_most_half_a_step_of_its_group(array, b, group_size):
    w = torch.from_numpy(array)
    q = fake_quantize(w, b, group_size)
    assert q.shape == w.shape and q.dtype == w.dtype
    qmax = 2 ** (b - 1) - 1
    for wg, qg in zip(_groups(w, group_size), _groups(q, group_size)):
        step = wg.abs().amax(dim=1, keepdim=True) / qmax
        assert torch.all((wg - qg).abs() <= step / 2 + 1e-6)
        assert torch.allclose(qg.abs().amax(dim=1), wg.abs().amax(dim=1))  # the largest entry is exact
        for row in qg:  # at most 2 * qmax + 1 levels in a group
            assert len(torch.unique(row)) <= 2 * qmax + 1


@settings(max_examples=60, deadline=None)
@given(weights, bits, group_sizes)
def test_symmetric_idempotent_and_group_by_group(array, b, group_size):
    w = torch.from_numpy(array)
    q = fake_quantize(w, b, group_size)
    assert torch.equal(fake_quantize(-w, b, group_size), -q)
    assert torch.allclose(fake_quantize(q, b, group_size), q, atol=1e-6)
    if w.shape[1] > group_size:  # changing a later group leaves the first one as it was
        changed = w.clone()
        changed[:, group_size:] *= 7
        assert torch.equal(fake_quantize(changed, b, group_size)[:, :group_size], q[:, :group_size])


def test_groups_run_along_the_input_dim_and_4_bits_err_more_than_8():
    w = torch.randn(96, 300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fake_quantize(w.T.contiguous(), 4, 128, in_dim=0), fake_quantize(w, 4, 128).T)
    err = {b: float((fake_quantize(w, b) - w).norm() / w.norm()) for b in (8, 4)}
    assert err[8] < 0.01 < err[4] < 0.2, err


def test_quantize_model_touches_the_block_projections_only():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=300, n_positions=64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    done = quantize_model(model, 4)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert done["layers"] == 8 and changed == {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in _PROJ}
    assert 0.01 < done["relative_error"] < 0.2 and 0 < done["share_of_parameters"] < 1


_PROJ = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

# -- attack specs ----------------------------------------------------------------------------------

attacks = st.one_of(
    st.builds(Attack, st.just("quant"), st.sampled_from(sorted(QUANT_BITS))),
    st.builds(Attack, st.just("relearn"), st.sampled_from(sorted(RELEARN_SETS)), st.integers(1, 10**6)),
)


@given(attacks)
def test_an_attack_parses_back_from_its_name(attack):
    assert parse_attack(attack.name) == attack
    assert attack.family in FAMILIES and ":" not in attack.dir_name


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_in_one_line(text):
    try:
        attack = parse_attack(text)
    except MemauditError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert attack.name == text.strip()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("qaunt:int4", "did you mean quant:int4?"),
        ("relearn:forgethalf:30", "did you mean relearn:forget-half:30?"),
        ("relearn:retian:40", "did you mean relearn:retain:40?"),
        ("relearn:retain", "needs a step count: relearn:retain:STEPS"),
        ("relearn:retain:0", "STEPS must be an integer from 1"),
        ("relearn:retain:ten", "STEPS must be an integer"),
        ("prune:50", "attacks: quant:int8, quant:int4, relearn:forget-half:STEPS, relearn:retain:STEPS"),
    ],
)
def test_bad_specs_say_what_to_write(spec, message):
    with pytest.raises(MemauditError, match=message.replace("?", r"\?")):
        parse_attack(spec)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(attacks=()), "no attack given"),
        (dict(attacks=("quant:int4", "quant:int4")), "given twice"),
        (dict(relearn_lr=0.0), "relearn_lr must be"),
        (dict(recover_margin=2.0), "recover_margin must be"),
        (dict(precision="fp8"), "unknown precision"),
    ],
)
def test_stress_config_checks_itself(changes, message):
    with pytest.raises(MemauditError, match=message):
        StressConfig(**({"attacks": ("quant:int8",)} | changes))


def test_bad_attack_on_the_command_line_is_refused_before_torch(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from memaudit.app.cli import main
        try:
            main(["stress", "m", "--data", "d", "--attack", "qaunt:int4", "--out", sys.argv[1]])
        except SystemExit as e:
            print(e.code, "torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.count("\n") == 1 and "did you mean quant:int4?" in done.stderr


def test_forget_half_splits_every_level_in_two():
    audit = [{"doc_id": 10 * lv + i, "kind": "repeated", "repeats": lv} for lv in (1, 8, 64) for i in range(5)]
    audit += [{"doc_id": 900 + i, "kind": "canary", "repeats": 8} for i in range(2)]
    audit += [{"doc_id": 990 + i, "kind": "heldout", "repeats": 0} for i in range(5)]
    relearned, measured = forget_half(audit, seed=0)
    assert not relearned & measured and len(relearned | measured) == 17
    for lv in (1, 8, 64):
        assert len({10 * lv + i for i in range(5)} & relearned) == 2  # the odd one out is measured
    assert forget_half(audit, seed=0) == (relearned, measured) != forget_half(audit, seed=1)


# -- the robustness metrics on hand-made numbers ---------------------------------------------------

STANDARD = {"memorization.member_loss": {"value": 1.0, "n": 8}, "memorization.nonmember_loss": {"value": 4.0, "n": 8}}


def _attacked(curve: list[tuple[int, float]] | None, after: float, before: float, family: str) -> dict:
    attack = {"family": family, "recover_margin": 0.1, "measured_members": 8}
    if curve is not None:
        attack["curve"] = [{"step": s, "member_loss": v} for s, v in curve]
    inputs = MetricInputs(
        computed={"memorization.gap_closed": {"value": after, "n": 8, "ci95": [after - 0.1, after + 0.1]}},
        others={"standard": STANDARD, "before": {"memorization.gap_closed": {"value": before, "n": 8}}},
        attack=attack,
    )
    names = [f"robustness.{f}.gap_closed_retained" for f in FAMILIES] + ["robustness.relearn_steps_to_recover"]
    return compute_all(inputs, [get_metric(n) for n in names])


def test_steps_to_recover_is_the_first_point_back_within_the_margin():
    # target: 1.0 + 0.1 * (4.0 - 1.0) = 1.3
    got = _attacked([(0, 3.5), (10, 2.0), (20, 1.31), (30, 1.29), (40, 1.1)], 0.2, 0.8, "relearn_retain")
    steps = got["robustness.relearn_steps_to_recover"]
    assert steps["value"] == 30 and steps["within_budget"] and recover_text(steps) == "30"
    kept = got["robustness.relearn_retain.gap_closed_retained"]
    assert kept["value"] == pytest.approx(0.25) and (kept["before"], kept["after"]) == (0.8, 0.2)
    assert kept["ci95"] == pytest.approx([0.125, 0.375])
    assert "robustness.quant_int4.gap_closed_retained" not in got  # another attack's family


def test_a_relearning_that_does_not_recover_is_past_its_budget():
    got = _attacked([(0, 3.5), (20, 2.5), (40, 1.9)], 0.5, 0.6, "relearn_forget_half")
    steps = got["robustness.relearn_steps_to_recover"]
    assert steps == {**steps, "value": None, "within_budget": False, "budget": 40}
    assert recover_text(steps) == fmt_entry(steps) == "> 40"
    doc = {"metrics": got, "model": {"path": "/m", "kind": "unlearned"}}
    gates = evaluate_gates(doc, [f"robustness.relearn_steps_to_recover{g}" for g in ("<20", ">20", "<60")])
    assert [g.passed for g in gates] == [True, False, False]  # > 40 steps: < 20 holds not, > 20 holds, < 60 unknown
    assert "did not recover within 40 steps" in gates[0].message and "run more than 60" in gates[2].message


def test_retained_needs_a_gap_closed_before():
    got = _attacked(None, 0.3, MIN_CLOSED / 2, "quant_int4")
    assert got == {}  # nothing to retain, and no relearning curve


# -- end to end ------------------------------------------------------------------------------------

FAST_SUITE = "name: fast\nprefix_lens: [32]\nexposure_candidates: 50\nbootstrap: 20\n"


@pytest.fixture(scope="module")
def stressed(tiny_models, tiny_data, tmp_path_factory):
    """The oracle (the tiny no-repeats model, a 'removal' that closed most of the gap) under three
    attacks, against the tiny standard model's scan, through the command line."""
    root = tmp_path_factory.mktemp("stress")
    (root / "fast.yaml").write_text(FAST_SUITE)
    standard = root / "standard"
    runner = CliRunner()
    scan = ["scan", "model", str(tiny_models["standard"]), "--data", str(tiny_data), "--suite", str(root / "fast.yaml")]
    assert runner.invoke(main, [*scan, "--out", str(standard)]).exit_code == 0
    args = ["stress", str(tiny_models["no-repeats"]), "--data", str(tiny_data), "--out", str(root / "oracle")]
    args += ["--standard", str(standard), "--suite", str(root / "fast.yaml"), "--precision", "fp32"]
    for attack in ("quant:int4", "relearn:forget-half:6", "relearn:retain:4"):
        args += ["--attack", attack]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, (done.output, done.exception)
    return root, done.output


def test_a_stress_run_writes_scans_of_the_attacked_model(stressed, tiny_data):
    root, output = stressed
    runs = {p.name: json.loads((p / "results.json").read_text()) for p in (root / "oracle").iterdir()}
    assert set(runs) == {"before", "quant-int4", "relearn-forget-half-6", "relearn-retain-4"}
    assert "attack" not in runs["before"]
    quant = runs["quant-int4"]
    assert quant["attack"]["quantized"]["bits"] == 4 and quant["suite"]["name"] == "fast"
    assert quant["data"]["audit_sha256"] == runs["before"]["data"]["audit_sha256"]
    half = runs["relearn-forget-half-6"]
    assert half["counts"]["members"] < runs["before"]["counts"]["members"]  # the relearned half is not measured
    assert [p["step"] for p in half["attack"]["curve"]][0] == 0 and half["attack"]["curve"][-1]["step"] == 6
    for name, run in runs.items():
        if name == "before":
            continue
        family = run["attack"]["family"]
        assert "memorization.gap_closed" in run["metrics"]
        assert ("robustness.relearn_steps_to_recover" in run["metrics"]) == family.startswith("relearn")
        gap = run["attack"]["gap_closed"]
        assert gap["before"] > 0.5 and math.isfinite(gap["after"]), gap  # the oracle closed most of the gap
        assert run["metrics"][f"robustness.{family}.gap_closed_retained"]["before"] == pytest.approx(gap["before"])
    assert "relearn:retain:4" in output and "> 4" in output  # the oracle does not recover: its floor
    assert not list((root / "oracle").glob("*.partial"))


def test_report_reads_stress_runs(stressed):
    root, _ = stressed
    out = root / "report"
    done = CliRunner().invoke(
        main, ["report", str(root / "standard"), *map(str, (root / "oracle").iterdir()), "--out", str(out)]
    )
    assert done.exit_code == 0, (done.output, done.exception)
    doc = json.loads((out / "results.json").read_text())
    assert doc["reference"] == "standard"  # attacked runs are never the reference
    labels = [run["label"] for run in doc["runs"]]
    assert "no-repeats @quant:int4" in labels and len(set(labels)) == len(labels)
    page = (out / "report.html").read_text()
    assert 'id="robustness"' in page and 'id="robustness-table"' in page and "relearn:forget-half:6" in page
    assert "Robustness" in (out / "summary.md").read_text()


def recorded_precisions(monkeypatch) -> list[str]:
    """The precision of every model a stress run loads, as asked of `load_model` (on a CPU `auto`
    scans in fp32 too, so the loaded weights alone cannot tell)."""
    asked = []
    load = stress_run.load_model

    def recording(model, **options):
        asked.append(options["precision"])
        return load(model, **options)

    monkeypatch.setattr(stress_run, "load_model", recording)
    return asked


def test_stress_scans_at_the_precision_asked_for(tiny_models, tiny_data, tmp_path, monkeypatch):
    asked = recorded_precisions(monkeypatch)
    (tmp_path / "fast.yaml").write_text(FAST_SUITE)
    config = StressConfig(attacks=("quant:int8",), suite=str(tmp_path / "fast.yaml"), precision="fp32")
    stress(tiny_models["no-repeats"], tiny_data, tmp_path / "stress", config, progress=False)
    assert asked == ["fp32", "fp32"]  # the model before the attack, and the attacked model


def test_scan_model_stress_uses_its_scan_as_before(tiny_models, tiny_data, tmp_path, monkeypatch):
    asked = recorded_precisions(monkeypatch)
    (tmp_path / "fast.yaml").write_text(FAST_SUITE)
    out = tmp_path / "scan"
    args = ["scan", "model", str(tiny_models["standard"]), "--suite", str(tmp_path / "fast.yaml"), "--out", str(out)]
    done = CliRunner().invoke(main, [*args, "--data", str(tiny_data), "--stress", "quant:int8", "--precision", "fp32"])
    assert done.exit_code == 0, (done.output, done.exception)
    assert asked == ["fp32"]  # the attacked model is scanned at the scan's own precision
    assert done.output.index("wrote " + str(out / "report.html")) < done.output.index("attack quant:int8")
    attacked = json.loads((out / "stress" / "quant-int8" / "results.json").read_text())
    assert attacked["attack"]["name"] == "quant:int8" and (out / "results.json").is_file()
    audit = tmp_path / "audit.txt"
    audit.write_text("one member text that is long enough\n")
    refused = CliRunner().invoke(main, [*args, "--audit", str(audit), "--stress", "quant:int8", "--force"])
    assert refused.exit_code == 2 and "--stress needs --data" in refused.stderr


def _attacked_run(model: str, attack: str, before: float, after: float) -> dict:
    family = parse_attack(attack).family
    retained = {"value": after / before, "n": 8} if before > MIN_CLOSED else None
    metrics = {f"robustness.{family}.gap_closed_retained": retained} if retained else {}
    return {
        "label": f"{model} @{attack}",
        "model": {"path": f"/models/{model}", "kind": "unlearned"},
        "attack": {"name": attack, "family": family, "gap_closed": {"before": before, "after": after}},
        "metrics": metrics,
    }


def test_robustness_chart_text_never_overlaps():
    """Six models under four attacks, values crowded near 0 and past 1: model names, panel titles,
    axis labels, the legend and the tick labels in view each get a box of their own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from memaudit.report.plots import robustness_figure

    models = ["standard", "no-repeats", "memsink-removed", "unlearn-npo", "unlearn-ga", "ablate"]
    attacks = ["quant:int8", "quant:int4", "relearn:forget-half:30", "relearn:retain:30"]
    values = [(0.0, 0.01), (1.14, 1.2), (0.43, 0.4), (0.37, 0.18), (0.08, 0.04), (0.01, 0.05)]
    doc = {"runs": [_attacked_run(m, a, *v) for a in attacks for m, v in zip(models, values)]}
    fig = robustness_figure(doc)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    texts = [t for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        low, high = ax.get_xlim()
        texts += [ax.title, ax.xaxis.label, *[t for t in ax.get_yticklabels() if t.get_visible()]]
        texts += [t for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text().strip()]
    assert set(models) <= {text for text, _ in boxes}
    for i, (a, box) in enumerate(boxes):
        assert not [b for b, other in boxes[i + 1 :] if box.overlaps(other)], a
