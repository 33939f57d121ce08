"""The per-layer robustness-sensitivity profile: its entries against direct computations, its cache, its CSV."""

import copy
import re
import threading

import pandas as pd
import pytest
import torch
from filelock import FileLock
from scipy.stats import norm
from torch.utils.data import Subset

from arqbench import plugins
from arqbench.errors import ArqbenchError, Busy
from arqbench.models.data import examples
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell
from arqbench.search import sensitivity
from arqbench.smoothing.core import (ESTIMATION, generators, lower_confidence_bound, sample_predictions,
                                    upper_confidence_bound)
from arqbench.smoothing.metrics import summarize

CPU = torch.device("cpu")
SMALL = {"n0": 20, "n": 200, "batch_size": 400, "options": {"irs": {"n_p": 0.5}}}  # N_p = 100 samples per image


@pytest.fixture(scope="module")
def digits(quick_digits_checkpoint):
    benchmark = plugins.create("benchmark", "digits")
    protocol = resolve(benchmark, SMALL)
    return prepare(benchmark, 0.25, protocol, CPU, checkpoint=quick_digits_checkpoint), protocol


def context(digits, seed=0):
    prepared, protocol = digits
    return CellRun(Cell("digits", 0.25, 1.0, "profile", seed), prepared, protocol, CPU).context()


def test_an_entry_equals_a_direct_computation(digits):
    """acr_drop, smoothed_acc_drop and clean_acc_drop of one point, recomputed from scratch with a fresh
    certifier: the float model and the model with only that layer quantized, on the same images and noise."""
    ctx = context(digits)
    layer = "net.block1.conv2"
    measured = sensitivity.profile(ctx, [layer], False, "acr", "irs", images=6, method="certified")
    (row,) = [r for r in measured.rows if r["w_bits"] == 2]

    certifier = plugins.create("certifier", "irs", n_p=0.5)
    reference = ctx.reference()
    subset = Subset(ctx.data.search, range(6))
    quantized = ctx.quantizer.quantize(ctx.model, {layer: (2, 8)}, ctx.calibration()).eval()

    def numbers(model):
        certs = certifier.certify(model, examples(subset), ctx.smoothing, 10, reference=reference)
        return summarize(certs, ctx.benchmark.radii)

    f, q = numbers(ctx.model), numbers(quantized)
    assert row["acr"] == pytest.approx(q["acr"], abs=1e-12)
    assert row["acr_drop"] == pytest.approx(f["acr"] - q["acr"], abs=1e-12)
    assert row["smoothed_acc_drop"] == pytest.approx(f["smoothed_acc"] - q["smoothed_acc"], abs=1e-12)
    assert row["clean_acc_drop"] == pytest.approx(ctx.accuracy(ctx.model) - ctx.accuracy(quantized), abs=1e-12)
    assert measured.reference["acr"] == pytest.approx(f["acr"], abs=1e-12)
    assert row["acr_drop"] > 0  # 2-bit weights in one conv cost this model robustness: the check is not vacuous


def test_disagreement_equals_a_direct_count(digits):
    ctx = context(digits)
    layer = "net.block2.conv2"
    measured = sensitivity.profile(ctx, [layer], False, "disagreement", "irs", images=5)
    (row,) = [r for r in measured.rows if r["w_bits"] == 2]
    xs = torch.stack([ctx.data.search[i][0] for i in range(5)])
    quantized = ctx.quantizer.quantize(ctx.model, {layer: (2, 8)}, ctx.calibration()).eval()
    n_p = 100  # irs.n_p 0.5 of n 200

    def predictions(model):
        return sample_predictions(model, xs, n_p, 0.25, 400, generators(CPU, 0, range(5), ESTIMATION))

    expected = (predictions(quantized) != predictions(ctx.model)).sum().item() / (5 * n_p)
    assert row["disagreement"] == pytest.approx(expected, abs=1e-12) and expected > 0
    assert row["acr"] is None and row["acr_drop"] is None


def test_the_cache_is_reused_and_extended(digits, capsys):
    ctx = context(digits, seed=3)
    first = sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=3, method="certified")
    assert first.computed == 7 and first.reused == 0 and first.path.is_file()

    calls, real = [], ctx.quantizer

    class Counting:
        def quantize(self, model, policy, calibration):
            calls.append(policy)
            return real.quantize(model, policy, calibration)

    ctx.quantizer = Counting()
    capsys.readouterr()
    again = sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=3, method="certified")
    assert calls == [] and again.reused == 7 and again.rows == first.rows
    assert "reused all 7 points" in capsys.readouterr().err
    more = sensitivity.profile(ctx, ["net.fc", "net.stem"], True, "acr", "irs", images=3, method="certified")
    assert more.reused == 7 and more.computed == 13 + 6  # stem: 13 points; fc: its 6 activation points
    assert sorted(calls, key=str) == sorted([{"net.stem": p} for p in sensitivity.points(True)]
                                            + [{"net.fc": (8, a)} for a in range(2, 8)], key=str)
    other = sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=4, method="certified")  # another
    assert other.computed == 7 and other.path != first.path


def test_a_second_process_asking_for_the_same_profile_waits_and_reuses_it(digits):
    ctx = context(digits, seed=4)
    ask = lambda: sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=2)  # noqa: E731
    path = ask().path
    measured = path.read_bytes()
    path.unlink()
    other = FileLock(path.with_name(f".{path.name}.lock"))  # another process measuring the same profile
    other.acquire()
    asked = {}
    waiter = threading.Thread(target=lambda: asked.setdefault("profile", ask()))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not path.exists()  # it waits instead of measuring the same points again
    path.write_bytes(measured)  # the other process finishes
    other.release()
    waiter.join(timeout=120)
    assert asked["profile"].computed == 0 and asked["profile"].reused == 7


def test_told_not_to_wait_a_search_hears_busy_and_a_measured_profile_leaves_its_lock_free(digits):
    ctx = context(digits, seed=5)
    path = sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=2).path
    lock = FileLock(path.with_name(f".{path.name}.lock"))
    lock.acquire(timeout=0)  # free again once the profile is measured
    try:
        ctx.wait_for_shared = False
        with pytest.raises(Busy, match="another process is measuring this profile"):
            sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=2)
    finally:
        lock.release()
    assert sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", images=2).reused == 7


def test_a_pair_is_composed_additively_and_a_policy_sums_its_layers(digits):
    ctx = context(digits)
    measured = sensitivity.profile(ctx, ["net.fc"], True, "disagreement", "irs", images=3)
    table = measured.sensitivity(["net.fc"], True, "disagreement")["net.fc"]
    value = {(r["w_bits"], r["a_bits"]): r["disagreement"] for r in measured.rows}
    assert table[(3, 5)] == pytest.approx(value[3, 8] + value[8, 5] - value[8, 8])
    assert table[(8, 8)] == value[8, 8] and len(table) == 49
    policy = {"net.fc": (3, 5), "net.stem": (2, 2)}  # layers outside the profile do not count
    assert sensitivity.policy_loss(policy, {"net.fc": table}) == pytest.approx(table[(3, 5)])
    with pytest.raises(ValueError, match="outside the profile"):
        sensitivity.policy_loss({"net.fc": (3, 5)}, measured.sensitivity(["net.fc"], False, "disagreement"))


def test_bad_requests_are_one_clear_line(digits):
    ctx = context(digits)
    with pytest.raises(ArqbenchError, match="metric must be one of"):
        sensitivity.profile(ctx, ["net.fc"], False, "loss", "irs")
    with pytest.raises(ArqbenchError, match="unknown certifier 'nope'"):
        sensitivity.profile(ctx, ["net.fc"], False, "acr", "nope")
    with pytest.raises(ArqbenchError, match="'net.nope' is not a quantizable layer"):
        sensitivity.profile(ctx, ["net.nope"], False, "disagreement", "irs")


def test_a_corrupt_cache_entry_is_rebuilt(digits, capsys):
    ctx = context(digits, seed=4)
    first = sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2)
    first.path.write_text("{not json")
    again = sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2)
    assert again.computed + again.skipped == 7 and "rebuilding" in capsys.readouterr().err
    assert [r["disagreement"] for r in again.rows] == [r["disagreement"] for r in first.rows]


def test_profile_command_writes_the_csv_and_heatmap_and_a_run_reuses_it(cli, tmp_path, quick_digits_checkpoint):
    """`arqbench profile` measures every layer; robust-ilp under the same settings then measures nothing."""
    flags = ["--n0", "20", "--n", "200", "--batch-size", "400", "--checkpoint", quick_digits_checkpoint]
    code, out, err = cli("profile", "--sigma", "0.25", "--images", "4", "--out", tmp_path, *flags)
    assert code == 0, err
    csv = tmp_path / "digits-sigma0.25-seed0-sensitivity.csv"
    assert csv.is_file() and (tmp_path / "digits-sigma0.25-seed0-sensitivity.png").is_file()
    frame = pd.read_csv(csv)
    assert len(frame) == 7 * 7 and set(frame["w_bits"]) == set(range(2, 8 + 1)) and set(frame["a_bits"]) == {8}
    counts = re.search(r"measured (\d+) points \(7 layers\)(?:.*, skipped (\d+) \(monotone in bits\))?", err)
    assert "net.block2.shortcut.0" in out and int(counts[1]) + int(counts[2] or 0) == 49
    assert (frame["acr_drop"] == frame["acr_drop"]).all()  # no missing value

    code, _, err = cli("profile", "--sigma", "0.25", "--images", "4", "--out", tmp_path, *flags)
    assert code == 0 and "reused all 49 points" in err
    code, _, err = cli("run", "--methods", "robust-ilp", "--sigma", "0.25", "--budget", "0.03", "--test-images", "4",
                       "--finetune-epochs", "0", "--option", "robust-ilp.images=4", "--out", tmp_path / "r", *flags)
    assert code == 0, err
    assert "robust-ilp: sensitivity profile: reused all 35 points" in err


def test_profile_command_errors(cli, tmp_path):
    code, _, err = cli("profile", "--images", "0", "--out", tmp_path)
    assert code == 2 and "--images must be a positive integer" in err and "\n" not in err.strip()
    code, _, err = cli("profile", "--metric", "loss")
    assert code == 2 and "invalid choice" in err


def test_a_quantizer_that_leaves_the_model_float_costs_nothing(digits):
    """Every point of a layer left at float (a quantizer that copies the model) is exactly zero: f and its
    copy are measured by one estimator on the same noise."""
    ctx = context(digits, seed=5)

    class Float:
        def quantize(self, model, policy, calibration):
            return copy.deepcopy(model)

    ctx.quantizer = Float()  # under seed 5, which no other test profiles: a cache entry of its own
    for metric in sensitivity.METRICS:
        measured = sensitivity.profile(ctx, ["net.block1.conv1"], True, metric, "irs", images=4)
        measures = ("acr_drop", "smoothed_acc_drop") if metric == "acr" else ("disagreement",)
        assert len(measured.rows) == 13
        # measured points lose exactly 0; a skipped one (above a point within noise of zero) is set to 0 on the
        # metric and measures nothing else
        assert all(row[k] == 0 for row in measured.rows if not row.get("skipped")
                   for k in measures + ("clean_acc_drop",))
        assert all(row[measures[0]] == 0 and row["clean_acc_drop"] is None for row in measured.rows
                   if row.get("skipped"))


def paired_measure(ctx, images=6, samples=100):
    """The paired method's measurer on the first ``images`` search images (f on N_p = 100 samples)."""
    config = ctx.smoothing
    return sensitivity._Paired(ctx, "acr", config, Subset(ctx.data.search, range(images)), 100, samples)


def test_paired_an_8_bit_layer_is_within_noise_of_zero_and_a_2_bit_one_a_clear_drop(digits):
    """On 40 images: with 20 the 2-bit drop of this 2-epoch model sat at the threshold (Z standard errors) at one
    CPU thread's rounding and above it at two's."""
    ctx = context(digits)
    measure = paired_measure(ctx, images=40)
    f = measure(ctx.model)
    assert f["acr"] > 0 and f["disagreement"] == 0
    layer = "net.block1.conv2"
    high, low = (measure(ctx.quantize({layer: bits})) for bits in ((8, 8), (2, 8)))
    high_drop, low_drop = f["acr"] - high["acr"], f["acr"] - low["acr"]
    assert high["within_noise"] and abs(high_drop) <= sensitivity.Z * high["drop_se"]
    assert not low["within_noise"] and low_drop > sensitivity.Z * low["drop_se"] > 0
    assert low["disagreement"] > high["disagreement"]


def test_paired_a_copy_of_f_loses_exactly_nothing_and_an_entry_equals_a_direct_computation(digits):
    """A model predicting as f does on every replayed sample loses exactly 0 (same noise, same estimator);
    a quantized point's ACR is IRS's radius sigma Phi^-1(pA_lower - zeta) computed here from scratch."""
    ctx = context(digits)
    measure = paired_measure(ctx, images=6)
    f = measure(ctx.model)
    same = measure(copy.deepcopy(ctx.model))
    assert same["acr"] == f["acr"] and same["disagreement"] == 0 and same["within_noise"]

    quantized = ctx.quantize({"net.block1.conv2": (2, 8)})
    got = measure(quantized)
    xs = torch.stack([ctx.data.search[i][0] for i in range(6)])
    labels = [ctx.data.search[i][1] for i in range(6)]

    def predictions(model, num):
        return sample_predictions(model, xs, num, 0.25, 400, generators(CPU, 0, range(6), ESTIMATION))

    floats, mine = predictions(ctx.model, 100), predictions(quantized, 100)
    radii = []
    for i in range(6):
        c_a = int(torch.mode(floats[i]).values)
        p_lower = lower_confidence_bound(int((floats[i] == c_a).sum()), 100, ctx.smoothing.alpha)
        zeta = upper_confidence_bound(int((mine[i] != floats[i]).sum()), 100, sensitivity.ALPHA_ZETA)
        p = p_lower - zeta
        radii.append(0.25 * norm.ppf(p) if p >= 0.5 and c_a == int(labels[i]) else 0.0)
    assert got["acr"] == pytest.approx(sum(radii) / 6, abs=1e-12)
    assert got["disagreement"] == pytest.approx((mine != floats).double().mean().item(), abs=1e-12)


def test_paired_skips_by_monotonicity_exactly_what_it_should(digits):
    """A constructed case: at 4 bits or more (weights and activations) the 'quantized' layer is f itself, below
    that its weights are zeroed. Each series is measured from 2 bits up to the first point within noise of zero
    (4 bits), and every point above it is recorded as skipped, at 0; cached, the skips are reused as such."""
    ctx = context(digits, seed=6)
    layer, calls = "net.block1.conv1", []

    class Constructed:
        def quantize(self, model, policy, calibration):
            calls.append(policy[layer])
            out = copy.deepcopy(model)
            if min(policy[layer]) < 4:
                with torch.no_grad():
                    dict(out.named_modules())[layer].weight.zero_()
            return out

    ctx.quantizer = Constructed()
    measured = sensitivity.profile(ctx, [layer], True, "disagreement", "irs", images=8, method="paired")
    rows = {(r["w_bits"], r["a_bits"]): r for r in measured.rows}
    skipped = {bits for bits, r in rows.items() if r.get("skipped")}
    assert skipped == {(w, 8) for w in range(5, 9)} | {(8, a) for a in range(5, 8)}
    assert sorted(calls) == sorted([(2, 8), (3, 8), (4, 8), (8, 2), (8, 3), (8, 4)])
    assert measured.computed == 6 and measured.skipped == 7
    assert all(rows[b]["disagreement"] == 0 and rows[b]["clean_acc_drop"] is None for b in skipped)
    assert rows[4, 8]["within_noise"] and rows[4, 8]["disagreement"] == 0
    assert not rows[3, 8]["within_noise"] and rows[3, 8]["disagreement"] > 0
    table = measured.sensitivity([layer], True, "disagreement")[layer]
    assert table[(6, 7)] == 0 and table[(2, 8)] == rows[2, 8]["disagreement"]
    assert measured.forwards == 8 * 100 + 6 * 8 * 100  # f on N_p, then the measured points only

    calls.clear()
    again = sensitivity.profile(ctx, [layer], True, "disagreement", "irs", images=8, method="paired")
    assert calls == [] and again.reused == 13 and again.rows == measured.rows


def test_the_cache_key_names_the_method_and_version(digits):
    ctx = context(digits, seed=7)
    paired = sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2, method="paired")
    certified = sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2, method="certified")
    assert sensitivity.VERSION >= 2 and paired.key["version"] == certified.key["version"] == sensitivity.VERSION
    assert (paired.key["method"], certified.key["method"]) == ("paired", "certified")
    assert paired.key["paired"] == {"samples": sensitivity.SAMPLES, "z": sensitivity.Z,
                                    "alpha_zeta": sensitivity.ALPHA_ZETA} and "paired" not in certified.key
    assert paired.path != certified.path
    fewer = sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2, method="paired", point_samples=50)
    assert fewer.path != paired.path and fewer.reused == 0
    with pytest.raises(ArqbenchError, match="method must be one of"):
        sensitivity.profile(ctx, ["net.fc"], False, "acr", "irs", method="exact")


def test_a_profile_reports_each_point_it_measures_through_the_context(digits):
    from contextlib import contextmanager

    calls = []

    @contextmanager
    def recorder(description, total):
        calls.append((description, total))
        yield lambda: calls.append("advance")

    ctx = context(digits, seed=5)
    ctx.progress = recorder
    sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2)
    assert calls == [("sensitivity profile: points", 7), *["advance"] * 7]  # weights at 2..8 bits
    calls.clear()
    sensitivity.profile(ctx, ["net.fc"], False, "disagreement", "irs", images=2)
    assert calls == []  # all reused: nothing to follow
