"""Leaderboards from result files: intervals, paired ranks, the radius cap, notes, links, exports, figures,
protocols, and `certify` reproducing a row."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from statsmodels.stats.weightstats import DescrStatsW

from arqbench import plugins
from arqbench.commands import _changed
from arqbench.errors import ArqbenchError
from arqbench.files import write_json_atomic
from arqbench.pipeline.cell import config_record
from arqbench.pipeline.config import resolve
from arqbench.pipeline.results import REFERENCE, Cell, read_all
from arqbench.report import leaderboard

RADII = ("0.25", "0.5", "0.75", "1", "1.25", "1.5")
PNG = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"\]\(([^)]+)\)")
IMAGES = 40


def radii_around(mean: float, seed: int, spread: float = 0.3) -> list[float]:
    """Per-image radii-if-correct with the given mean (some images wrong: 0)."""
    rng = np.random.default_rng(seed)
    values = np.clip(mean + spread * rng.standard_normal(IMAGES), 0.0, None)
    values[rng.random(IMAGES) < 0.1] = 0.0
    return list(values - values.mean() + mean) if (values - values.mean() + mean).min() >= 0 else list(values)


def certificates(values: list[float]) -> list[dict]:
    return [{"index": i, "label": 1, "prediction": 1 if v > 0 else 0, "radius": float(v), "p_lower": 0.9,
             "count": 9, "n": 10, "seconds": 0.0, "details": {}} for i, v in enumerate(values)]


def record(method, sigma, budget, seed, acr=None, *, values=None, status="ok", error=None, fraction=None,
           within=True, n=10000, base="base0", options=None, quantizer="linear"):
    """A result record with the schema of ``CellRun.record`` / ``failed_result``."""
    cell = Cell("digits", sigma, budget, method, seed)
    overrides = {"n": n, "test_images": IMAGES, "quantizer": quantizer, **({"options": options} if options else {})}
    config = config_record(cell, resolve(plugins.create("benchmark", "digits"), overrides))
    result = {"benchmark": "digits", "method": method, "sigma": sigma, "budget": budget, "seed": seed,
              "status": status, "error": error, "config": config, "created": "2026-01-01T00:00:00+00:00"}
    if status != "ok":
        return result
    values = radii_around(acr, hash((method, seed)) % 1000) if values is None else values
    acr = float(np.mean(values))
    fraction = 1.0 if budget is None else (fraction if fraction is not None else 0.9 * budget)
    return {**result,
            "policy": None if method == REFERENCE else {"net.stem": [8, 8], "net.fc": [8, 8]},
            "metrics": {"clean_acc": 0.9, "smoothed_acc": float(np.mean(np.array(values) > 0)), "acr": acr,
                        "abstain_rate": 0.1, "images": IMAGES,
                        "certified_acc": {r: float(np.mean(np.array(values) >= float(r))) for r in RADII}},
            "cost": {"cost_model": "bitops", "fraction": fraction,
                     "models": {"bitops": {"cost": 1.0, "fraction": fraction},
                                "size": {"cost": 65536 * fraction, "fraction": fraction}},
                     **({} if budget is None else {"within_budget": within})},
            "timing": {"search_s": 0.0 if method == REFERENCE else 12.5,
                       "search_cost_s": 0.0 if method == REFERENCE else 20.0, "finetune_s": 1.0, "certify_s": 2.0},
            "search": {}, "certificates": certificates(values),
            "base_model": {"path": None, "arch": None, "fingerprint": base},
            "versions": {"arqbench": "0.1.0", "torch": "2.x", "device": "cpu"}}


def write_results(root: Path, records: list[dict]) -> Path:
    for r in records:
        write_json_atomic(Cell(r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]).path(root), r)
    return root


BASE = radii_around(0.5, 7)


def shifted(delta: float, noise: float = 0.0, seed: int = 0) -> list[float]:
    """BASE moved by ``delta`` on every image (plus optional per-image noise): paired comparisons are exact."""
    rng = np.random.default_rng(seed)
    return [max(0.0, v + delta + noise * rng.standard_normal()) if v > 0 else 0.0 for v in BASE]


def standard(root: Path) -> Path:
    """sigma 0.25 at budgets 2.5% and 5% and sigma 0.5 at 2.5%: a ranked field with every kind of note."""
    records = [record(REFERENCE, s, None, seed, values=shifted(0.1)) for s in (0.25, 0.5) for seed in (0, 1)]
    for s, budgets in ((0.25, (0.025, 0.05)), (0.5, (0.025,))):
        for b in budgets:
            records += [record("beta", s, b, 0, values=shifted(0.0)), record("beta", s, b, 1, values=shifted(0.0)),
                        record("alpha", s, b, 0, values=shifted(-0.01, 0.2, 1)),  # ~ beta: a tie
                        record("alpha", s, b, 1, values=shifted(-0.01, 0.2, 2)),
                        record("gamma", s, b, 0, values=shifted(-0.2)),  # clearly below
                        record("gamma", s, b, 1, status="failed", error="CUDA out of memory | oops"),
                        record("delta", s, b, 0, values=shifted(0.3), fraction=1.2 * b, within=False),  # over budget
                        record("eps", s, b, 0, status="failed", error="InfeasibleBudget: too low")]
    return write_results(root / "results", records)


def pareto_pngs(written: list[Path]) -> list[str]:
    """The Pareto plots among the files a rendering wrote (not the figures of ``arqbench.report.inside``)."""
    return sorted(p.name for p in written if p.suffix == ".png" and not p.stem.endswith(INSIDE))


INSIDE = ("-bits", "-learning", "-sensitivity", "-curve")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """The markdown's tables by the heading above them: rows of cells."""
    out, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ")
        elif line.startswith("|") and not re.match(r"\|\s*-*:?\|", line) and not line.startswith("|:"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[0] != "Rank":
                out.setdefault(heading, []).append(cells)
    return out


def header_of(markdown: str) -> list[str]:
    return [c.strip() for c in re.search(r"\n(\|\s*Rank.*)\n", markdown).group(1).split("|")[1:-1]]


def render(results: Path, out: Path, fmt="markdown") -> list[Path]:
    return leaderboard.render(read_all(results), out, fmt, source=results)


def test_acr_intervals_paired_ranks_and_at_most_eleven_columns(tmp_path):
    results = standard(tmp_path)
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# arqbench leaderboard: digits", "## sigma = 0.25", "### budget = 2.5% of float BitOPs",
                        "### budget = 5% of float BitOPs", "## sigma = 0.5", "### budget = 2.5% of float BitOPs"]
    rows = next(iter(tables(text.split("## sigma = 0.25")[1].split("### budget = 5%")[0]).values()))
    assert [(r[0], r[1]) for r in rows] == [("—", "fp32"), ("1=", "beta"), ("1=", "alpha"), ("3", "gamma"),
                                           ("—", "delta"), ("—", "eps")]
    columns = header_of(text)
    assert len(columns) <= 11
    assert columns == ["Rank", "Method", "BitOPs %", "Clean acc %", "Smoothed acc %", "Cert@0.25 %", "Cert@0.5 %",
                       "Cert@0.75 %", "ACR [95% CI]", "Group", "Search (s)"]
    assert [r[columns.index("Group")] for r in rows] == ["—", "a", "a", "b", "—", "—"]
    beta = dict(zip(columns, rows[1]))
    interval = DescrStatsW(np.array(shifted(0.0))).tconfint_mean(alpha=0.05)  # an independent computation
    assert beta["ACR [95% CI]"] == f"{np.mean(shifted(0.0)):.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    assert beta["Search (s)"] == "20.0"  # the search's cost, cached work included
    assert dict(zip(columns, rows[0]))["BitOPs %"] == "100.00"
    assert "Protocol: n0 = 100, n = 10000, alpha = 0.001, 40 test images" in text


def test_the_interval_of_several_seeds_is_over_images_of_their_mean(tmp_path):
    results = standard(tmp_path)
    path = render(results, tmp_path, "csv")[0]
    df = pd.read_csv(path)
    alpha = df[(df.method == "alpha") & (df.sigma == 0.25) & (df.budget == 0.025)].iloc[0]
    per_image = (np.array(shifted(-0.01, 0.2, 1)) + np.array(shifted(-0.01, 0.2, 2))) / 2
    low, high = DescrStatsW(per_image).tconfint_mean(alpha=0.05)
    assert alpha.acr_low == pytest.approx(low) and alpha.acr_high == pytest.approx(high)
    assert alpha.acr_mean == pytest.approx(per_image.mean())
    diff = np.array(shifted(0.0)) - per_image  # beta (above) minus alpha, image by image
    low, high = DescrStatsW(diff).tconfint_mean(alpha=0.05)
    assert (alpha.vs_above_low, alpha.vs_above_high) == (pytest.approx(low), pytest.approx(high))
    assert low < 0 < high and alpha["rank"] == 1 and alpha.tied
    gamma = df[(df.method == "gamma") & (df.sigma == 0.25) & (df.budget == 0.025)].iloc[0]
    assert gamma.vs_above_low > 0 and gamma["rank"] == 3 and not gamma.tied


def test_no_certified_accuracy_column_above_what_n_can_certify(tmp_path):
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, 0.5, n=2000), record("a", 0.25, 0.05, 0, 0.4, n=2000),
        record(REFERENCE, 0.5, None, 0, 0.5, n=2000), record("a", 0.5, 0.05, 0, 0.4, n=2000)])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    quarter, half = text.split("## sigma = 0.25")[1].split("## sigma = 0.5")
    cap = 0.25 * 2.7009  # sigma * Phi^-1(0.001^(1/2000))
    assert f"= {cap:.3f} (n = 2000, alpha = 0.001)" in quarter
    assert [c for c in header_of(quarter) if c.startswith("Cert@")] == ["Cert@0.25 %", "Cert@0.5 %"]
    # sigma 0.5 can certify up to 1.35: 5 radii, of which three spread over the range are shown
    assert [c for c in header_of(half) if c.startswith("Cert@")] == ["Cert@0.25 %", "Cert@0.75 %", "Cert@1.25 %"]
    df = pd.read_csv(render(results, tmp_path, "csv")[0])
    assert {f"cert@{r}_mean" for r in RADII} <= set(df.columns)  # every radius in the export
    assert df.radius_cap.iloc[0] == pytest.approx(cap, abs=1e-3)


def test_failed_and_over_budget_rows_are_noted_not_hidden(tmp_path):
    render(standard(tmp_path), tmp_path)
    text = (tmp_path / "digits.md").read_text()
    first = text.split("### budget = 5%")[0]
    rows = {r[1]: r for r in next(iter(tables(first).values()))}
    assert rows["delta"][0] == "—" and rows["eps"][0] == "—" and rows["gamma"][0] == "3"
    assert "- delta: over budget (seed 0 at 3.00% of float BitOPs, budget 2.5%)" in first
    assert "- eps: failed: InfeasibleBudget: too low" in first
    assert "- gamma: seed 1 failed: CUDA out of memory | oops" in first


def test_a_model_fine_tuned_with_batchnorm_frozen_is_ranked_and_noted(tmp_path):
    rescued = {**record("alpha", 0.25, 0.05, 1, values=shifted(0.1)), "finetune": {"epochs": 2, "frozen_batchnorm": True}}
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, values=shifted(0.2)), record("alpha", 0.25, 0.05, 0, values=shifted(0.1)),
        rescued, {**record("beta", 0.25, 0.05, 0, values=shifted(0.0)), "finetune": {"frozen_batchnorm": False}}])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    assert [(r[0], r[1]) for r in next(iter(tables(text).values()))] == [("—", "fp32"), ("1", "alpha"), ("2", "beta")]
    assert "- alpha: seed 1: the fine-tune diverged and reran with BatchNorm frozen" in text
    assert "- beta:" not in text


def test_options_make_their_own_row_and_commands_are_shown(tmp_path):
    command = "arqbench run --methods a,b --budget 0.05 --out r"
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, values=shifted(0.1)), record("a", 0.25, 0.05, 0, values=shifted(0.0)),
        {**record("b", 0.25, 0.05, 0, values=shifted(-0.3)), "command": command},
        record("d", 0.25, 0.025, 0, 0.3, options={"d": {"warmup": 5}})])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    assert f"Results produced by:\n\n```\n{command}\n```" in text
    found = tables(text)
    assert [(r[0], r[1]) for r in found["budget = 5% of float BitOPs"]] == [("—", "fp32"), ("1", "a"), ("2", "b")]
    assert [r[1] for r in found["budget = 2.5% of float BitOPs"]] == ["fp32", "d (warmup=5)"]


def test_result_links_and_exports_resolve_in_the_published_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    standard(tmp_path / "leaderboards")
    written = render(Path("leaderboards/results"), Path("leaderboards"))
    assert written[0] == Path("leaderboards/digits.md")
    text = written[0].read_text()
    assert all((tmp_path / "leaderboards" / link).exists() for link in LINK.findall(text))
    assert "[results/digits/sigma0.25/budget0.025/](results/digits/sigma0.25/budget0.025/)" in text
    assert "`arqbench leaderboard --results leaderboards/results --out leaderboards`" in text
    df = pd.read_csv(render(Path("leaderboards/results"), Path("leaderboards"), "csv")[0])
    linked = {p for cell in df.results.dropna() for p in cell.split()}
    every = {p.relative_to(tmp_path / "leaderboards").as_posix()
             for p in (tmp_path / "leaderboards/results").rglob("*.json")}
    assert linked == every and len(every) == 28  # every result file, from its row


def test_csv_and_json_have_one_row_per_leaderboard_row_with_the_bounds(tmp_path):
    results = standard(tmp_path)
    path = render(results, tmp_path, "csv")[0]
    df = pd.read_csv(path)
    assert len(df) == 2 + 5 * 3  # fp32 once per sigma (no budget) + 5 methods x 3 tables
    assert df[df.method == REFERENCE].budget.isna().all()
    assert {"acr_low", "acr_high", "vs_above_low", "vs_above_high", "tied", "bitops_pct_mean", "size_pct_mean",
            "search_s_mean"} <= set(df.columns)
    assert df[df.method == "eps"].acr_mean.isna().all() and df[df.method == "eps"]["rank"].isna().all()
    [path] = render(results, tmp_path, "json")
    assert path.name == "digits.leaderboard.json"
    data = json.loads(path.read_text())
    assert list(data["protocols"]) == [""] and data["protocols"][""]["n"] == 10000 and len(data["rows"]) == len(df)
    gamma = next(r for r in data["rows"] if r["method"] == "gamma" and r["budget"] == 0.05)
    assert [(run["seed"], run["status"]) for run in gamma["runs"]] == [(0, "ok"), (1, "failed")]
    assert gamma["rank"] == 3 and gamma["acr_low"] < gamma["acr_mean"] < gamma["acr_high"]


def test_latex_is_a_booktabs_table_per_cell(tmp_path):
    [path] = render(standard(tmp_path), tmp_path, "latex")
    text = path.read_text()
    assert text.count(r"\begin{table}") == 3 and text.count(r"\toprule") == 3
    assert r"1= & beta" in text and r"ACR [95\% CI]" in text.replace("ACR [95\\% CI]", r"ACR [95\% CI]")


def test_a_certified_accuracy_curve_per_table_with_its_data(tmp_path):
    results = standard(tmp_path)
    written = render(results, tmp_path)
    curves = sorted(p.name for p in written if p.name.endswith("-curve.png"))
    assert curves == ["digits-sigma0.25-budget0.025-curve.png", "digits-sigma0.25-budget0.05-curve.png",
                      "digits-sigma0.5-budget0.025-curve.png"]
    text = (tmp_path / "digits.md").read_text()
    assert all(f"]({name})" in text and (tmp_path / name).read_bytes().startswith(PNG) for name in curves)
    data = pd.read_csv(tmp_path / "digits-sigma0.25-budget0.025-curve.csv")
    assert data.radius.iloc[-1] <= 0.25 * 3.1946 + 1e-9  # up to what n = 10000 can certify
    for r in (0.0, 0.25, 0.5):  # certified accuracy = share of images correct with radius >= r, seeds averaged
        row = data[np.isclose(data.radius, r)].iloc[0]
        assert row["beta"] == pytest.approx(np.mean(np.array(shifted(0.0)) >= max(r, 1e-12)))
        assert row["gamma"] == pytest.approx(np.mean(np.array(shifted(-0.2)) >= max(r, 1e-12)))


def test_figures_per_sigma_with_their_data_deterministic_and_pruned(tmp_path):
    results = standard(tmp_path)
    out = tmp_path / "board"
    written = render(results, out)
    pngs = pareto_pngs(written)
    assert pngs == ["digits-sigma0.25.png", "digits-sigma0.5.png"]
    text = (out / "digits.md").read_text()
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000 and f"]({name})" in text
    frame = pd.read_csv(out / "digits-sigma0.25.csv")  # the figure's numbers, checkable against the table
    beta = frame[(frame.method == "beta") & (frame.budget == 0.025)].iloc[0]
    assert beta.acr == pytest.approx(np.mean(shifted(0.0))) and beta.x == pytest.approx(90 * 0.025)
    before = {name: (out / name).read_bytes() for name in pngs}
    render(results, out)
    assert {name: (out / name).read_bytes() for name in pngs} == before
    (out / "digits-sigma9.png").write_bytes(b"stale")  # a table that no longer exists
    render(results, out)
    assert not (out / "digits-sigma9.png").exists() and not list(out.glob(".*.tmp"))


def test_the_default_output_is_the_results_dir_and_is_never_read_back(tmp_path, cli):
    results = standard(tmp_path)
    for fmt in ("markdown", "csv", "json", "latex"):
        code, _, err = cli("leaderboard", "--results", results, "--format", fmt)
        assert code == 0, err
    assert {p.name for p in results.iterdir() if p.is_file()} >= {
        "digits.md", "digits.csv", "digits.leaderboard.json", "digits.tex", "digits-sigma0.25.png"}
    assert len(read_all(results)) == 28  # the exports are not results


def test_protocols_are_never_averaged_together(tmp_path):
    """Two result dirs (n = 2000 and n = 10000) under one --results: separate protocols, each with its fp32."""
    write_results(tmp_path / "results/small", [
        record(REFERENCE, 0.25, None, 0, 0.5, n=2000), record("a", 0.25, 0.05, 0, 0.40, n=2000),
        record("b", 0.25, 0.05, 0, 0.30, n=2000)])
    write_results(tmp_path / "results/large", [
        record(REFERENCE, 0.25, None, 0, 0.6), record("a", 0.25, 0.05, 0, 0.10)])
    written = render(tmp_path / "results", tmp_path)
    text = (tmp_path / "digits.md").read_text()
    assert "- **A**: n0 = 100, **n = 2000**" in text and "- **B**: n0 = 100, **n = 10000**" in text
    sections = text.split("## sigma = 0.25, protocol ")
    assert [s[0] for s in sections[1:]] == ["A", "B"]
    a, b = (next(iter(tables(s).values())) for s in sections[1:])
    assert [r[1] for r in a] == ["fp32", "a", "b"] and [r[1] for r in b] == ["fp32", "a"]
    assert pareto_pngs(written) == ["digits-sigma0.25-A.png", "digits-sigma0.25-B.png"]


def test_a_protocol_with_only_the_shared_float_row_at_a_sigma_gets_no_section(tmp_path):
    """fp32 joins every protocol it certifies like; where lsq ran no method, its section would hold only that row."""
    write_results(tmp_path / "results/linear", [
        record(REFERENCE, 0.25, None, 0, 0.5), record("a", 0.25, 0.05, 0, 0.4),
        record(REFERENCE, 0.5, None, 0, 0.3), record("a", 0.5, 0.05, 0, 0.2)])
    write_results(tmp_path / "results/lsq", [record("a", 0.25, 0.05, 0, 0.45, quantizer="lsq")])
    render(tmp_path / "results", tmp_path)
    text = (tmp_path / "digits.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## sigma")]
    assert headings == ["## sigma = 0.25, protocol A", "## sigma = 0.5, protocol A", "## sigma = 0.25, protocol B"]
    assert "Only the float model" not in text


def test_the_same_cell_twice_and_an_empty_dir_are_one_line_errors(tmp_path, cli):
    for run in ("one", "two"):
        write_results(tmp_path / "results" / run, [record("a", 0.25, 0.05, 0, 0.4)])
    with pytest.raises(ArqbenchError, match="are the same cell .* keep one of them out of --results"):
        render(tmp_path / "results", tmp_path)
    (tmp_path / "empty").mkdir()
    code, out, err = cli("leaderboard", "--results", tmp_path / "empty", "--out", tmp_path / "board")
    assert code == 2 and err.count("\n") == 1 and "no results to rank" in err


def test_other_base_model_is_noted_and_unranked(tmp_path):
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, 0.5), record("a", 0.25, 0.05, 0, 0.4),
        record("b", 0.25, 0.05, 0, 0.45, base="other")])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    rows = next(iter(tables(text).values()))
    assert [(r[0], r[1]) for r in rows] == [("—", "fp32"), ("1", "a"), ("—", "b")]
    assert "- b: other base model (other) than the fp32 row (base0)" in text


def test_certify_reproduces_a_real_result_file(tmp_path, cli):
    """A tiny real run, then `certify --policy <result file>` for its uniform and its fp32 rows."""
    out = tmp_path / "results"
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, *TINY)
    assert code == 0, err
    for path in (out / "digits/sigma0.25/budget0.05/uniform-seed0.json", out / "digits/sigma0.25/fp32-seed0.json"):
        code, text, err = cli("certify", "--policy", path)
        assert code == 0, err
        assert "NO" not in text and text.count(" yes ") == 4 + len(RADII), text
    source = json.loads((out / "digits/sigma0.25/fp32-seed0.json").read_text())  # certify --n 300 is no replay:
    protocol = resolve(plugins.create("benchmark", "digits"), {**source["config"]["protocol"], "n": 300})
    assert _changed(source, 0.25, 0, protocol) == ["n 300 vs 200"] and _changed(source, 0.5, 1, protocol)[:2] == [
        "sigma 0.5 vs 0.25", "seed 1 vs 0"]
    code, _, _ = cli("leaderboard", "--results", out, "--out", tmp_path)
    assert code == 0 and "digits/sigma0.25/budget0.05/" in (tmp_path / "digits.md").read_text()



def test_certify_replays_a_cpu_result_with_the_thread_count_it_was_computed_with(tmp_path, cli):
    out = tmp_path / "results"
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, *TINY)
    assert code == 0, err
    path = out / "digits/sigma0.25/budget0.05/uniform-seed0.json"
    result = json.loads(path.read_text())
    assert result["versions"]["threads"] == 1  # digits' preferred count
    result["versions"]["threads"] = 2
    path.write_text(json.dumps(result))
    before = torch.get_num_threads()
    code, _, err = cli("certify", "--policy", path)
    assert code == 0, err
    assert f"replaying with 2 CPU threads, as {path} was computed" in " ".join(err.split())
    assert torch.get_num_threads() == before  # the command's setting does not outlive it


def chain(step: float, spread: float) -> dict[str, list[float]]:
    """Three rows x > y > z, each ``step`` above the next on average, with per-image noise of sd ``spread``
    on each step, the two steps' noise orthogonal: x - z has twice the mean and sqrt(2) times the sd."""
    u = np.resize([1.0, -1.0], IMAGES)  # mean 0, orthogonal to v
    v = np.resize([1.0, 1.0, -1.0, -1.0], IMAGES)
    y = 1.0 + 0.1 * np.resize([0.0, 1.0, 2.0, 3.0, 4.0], IMAGES)
    return {"x": list(y + step + spread * u), "y": list(y), "z": list(y - step - spread * v)}


def board_of(tmp_path, rows: dict[str, list[float]]) -> tuple[list[list[str]], list[str], pd.DataFrame, pd.DataFrame]:
    """The markdown table (rows, header), the csv and the pairs csv of one table with these per-image radii."""
    results = write_results(tmp_path / "r", [record(REFERENCE, 0.25, None, 0, values=list(np.full(IMAGES, 1.5)))]
                            + [record(name, 0.25, 0.05, 0, values=values) for name, values in rows.items()])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    rows, pairs = render(results, tmp_path, "csv")
    return next(iter(tables(text).values())), header_of(text), pd.read_csv(rows), pd.read_csv(pairs)


def paired_t(a: list[float], b: list[float]) -> float:
    """The two-sided p of the paired t-test, computed independently of arqbench."""
    return DescrStatsW(np.array(a) - np.array(b)).ttest_mean(0.0)[1]


def test_ranks_come_from_all_pairs_not_a_chain_of_neighbour_ties(tmp_path):
    radii = chain(0.05, 0.164)  # each step t = 1.9 (p ~ 0.06); x - z t = 2.7 (p ~ 0.01 < 0.05 / 3)
    assert paired_t(radii["x"], radii["y"]) > 0.05 and paired_t(radii["y"], radii["z"]) > 0.05
    assert 3 * paired_t(radii["x"], radii["z"]) < 0.05
    rows, columns, df, pairs = board_of(tmp_path, radii)
    assert [(r[0], r[1], r[columns.index("Group")]) for r in rows] == [
        ("—", "fp32", "—"), ("1=", "x", "a"), ("1=", "y", "ab"), ("2", "z", "b")]
    ranked = df[df.method != REFERENCE].set_index("method")
    assert (ranked.vs_above_low < 0).iloc[1:].all() and (ranked.vs_above_high > 0).iloc[1:].all()  # the old chain
    assert list(ranked["rank"]) == [1, 1, 2] and list(ranked.group) == ["a", "ab", "b"]
    assert [(p.method_a, p.method_b, p.significant) for p in pairs.itertuples()] == [
        ("x", "y", False), ("x", "z", True), ("y", "z", False)]
    xz = pairs.iloc[1]
    low, high = DescrStatsW(np.array(radii["x"]) - np.array(radii["z"])).tconfint_mean(alpha=0.05)
    assert (xz.acr_difference, xz.difference_low, xz.difference_high) == (
        pytest.approx(0.1), pytest.approx(low), pytest.approx(high))
    assert xz.p == pytest.approx(paired_t(radii["x"], radii["z"])) and xz.p_holm == pytest.approx(3 * xz.p)


def test_holm_keeps_a_pair_that_only_the_unadjusted_test_separates_tied(tmp_path):
    radii = chain(0.05, 0.195)  # x - z: t = 2.27, p ~ 0.03: below 0.05 alone, not after Holm over 3 pairs
    assert paired_t(radii["x"], radii["z"]) < 0.05 < 3 * paired_t(radii["x"], radii["z"])
    rows, columns, df, pairs = board_of(tmp_path, radii)
    xz = pairs[(pairs.method_a == "x") & (pairs.method_b == "z")].iloc[0]
    assert xz.difference_low > 0 and xz.p < 0.05  # its unadjusted 95% interval excludes 0
    assert xz.p_holm == pytest.approx(3 * xz.p) and not xz.significant and not pairs.significant.any()
    assert [(r[0], r[1], r[columns.index("Group")]) for r in rows[1:]] == [("1=", "x", "a"), ("1=", "y", "a"),
                                                                         ("1=", "z", "a")]


def test_a_table_where_no_pair_differs_ranks_every_row_first_with_one_letter(tmp_path):
    rng = np.random.default_rng(3)
    base = 1.0 + 0.2 * rng.random(IMAGES)
    radii = {name: list(base + 0.3 * rng.standard_normal(IMAGES)) for name in ("p", "q", "r", "s")}
    rows, columns, df, pairs = board_of(tmp_path, radii)
    assert len(pairs) == 6 and (pairs.p_holm > 0.05).all()
    assert {(r[0], r[columns.index("Group")]) for r in rows[1:]} == {("1=", "a")}
    data = json.loads(render(tmp_path / "r", tmp_path, "json")[0].read_text())
    assert [(p["method_a"], p["method_b"]) for p in data["pairs"]] == [
        (a, b) for i, a in enumerate(df.method[1:]) for b in list(df.method[1:])[i + 1:]]
    assert all(r["group"] == "a" and r["rank"] == 1 and r["tied"] for r in data["rows"] if r["method"] != REFERENCE)


@pytest.mark.parametrize("items, different, letters", [
    ("ABC", ["AC"], ["a", "ab", "b"]),  # the textbook case: A and C differ, B differs from neither
    ("ABCD", ["AC", "AD", "BD"], ["a", "ab", "bc", "c"]),  # a staircase
    ("ABC", ["AB", "AC", "BC"], ["a", "b", "c"]),
    ("ABC", [], ["a", "a", "a"]),
    ("ABCD", ["AB", "CD"], ["ab", "cd", "ac", "bd"]),  # 2 x 2: each row shares a letter with both of the others
])
def test_compact_letter_display(items, different, letters):
    from arqbench.report.letters import compact_letters

    found = compact_letters(list(items), [tuple(pair) for pair in different])
    assert [found[x] for x in items] == letters
    for i, a in enumerate(items):  # the display's contract: a shared letter exactly when not different
        for b in items[i + 1:]:
            assert bool(set(found[a]) & set(found[b])) == (a + b not in different)
