"""Leaderboards from result files: tables, ranking, marks, links, csv/json, Pareto plots, protocols, certify."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY

from arqbench import plugins
from arqbench.commands import _changed
from arqbench.errors import ArqbenchError
from arqbench.files import write_json_atomic
from arqbench.pipeline.config import resolve
from arqbench.pipeline.protocol import config_record
from arqbench.pipeline.results import REFERENCE, Cell, read_all
from arqbench.report import leaderboard

RADII = ("0.25", "0.5", "0.75", "1", "1.25", "1.5")
PNG = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"\]\(([^)]+)\)")


def record(method, sigma, budget, seed, acr, *, status="ok", error=None, bitops=None, within=True, n=200,
           base="base0", options=None):
    """A result record with the schema of ``protocol.cell_result`` / ``failed_result`` (no certificates)."""
    cell = Cell("digits", sigma, budget, method, seed)
    overrides = {"n": n, "test_images": 20, **({"options": options} if options else {})}
    config = config_record(cell, resolve(plugins.create("benchmark", "digits"), overrides))
    result = {"benchmark": "digits", "method": method, "sigma": sigma, "budget": budget, "seed": seed,
              "status": status, "error": error, "config": config, "created": "2026-01-01T00:00:00+00:00"}
    if status != "ok":
        return result
    fraction = 1.0 if budget is None else (bitops if bitops is not None else 0.9 * budget)
    return {**result,
            "policy": None if method == REFERENCE else {"net.stem": [8, 8], "net.fc": [8, 8]},
            "metrics": {"clean_acc": 0.9, "smoothed_acc": min(1.0, 0.5 + acr), "acr": acr, "abstain_rate": 0.1,
                        "images": 20, "certified_acc": {r: max(0.0, 0.8 - float(r) / 2) for r in RADII}},
            "cost": {"bitops": 1.0, "bitops_fraction": fraction, "size_bits": 8192 * 8 * fraction,
                     "size_fraction": fraction, "cost_model": "bitops", "fraction": fraction,
                     **({} if budget is None else {"within_budget": within})},
            "timing": {"search_s": 0.0 if method == REFERENCE else 12.5, "finetune_s": 1.0, "certify_s": 2.0},
            "search": {}, "certificates": [], "base_model": {"path": None, "arch": None, "fingerprint": base},
            "versions": {"arqbench": "0.1.0", "torch": "2.x", "device": "cpu"}}


def write_results(root: Path, records: list[dict]) -> Path:
    for r in records:
        write_json_atomic(Cell(r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]).path(root), r)
    return root


def standard(root: Path) -> Path:
    """sigma 0.25 at budgets 2.5% and 5% and sigma 0.5 at 2.5%: a ranked field with every kind of mark."""
    records = [record(REFERENCE, s, None, seed, 0.50 + 0.01 * seed) for s in (0.25, 0.5) for seed in (0, 1)]
    for s, budgets in ((0.25, (0.025, 0.05)), (0.5, (0.025,))):
        for b in budgets:
            records += [record("alpha", s, b, 0, 0.40), record("alpha", s, b, 1, 0.50),  # mean 0.45
                        record("beta", s, b, 0, 0.47), record("beta", s, b, 1, 0.47),  # mean 0.47: first
                        record("gamma", s, b, 0, 0.30),
                        record("gamma", s, b, 1, None, status="failed", error="CUDA out of memory | oops"),
                        record("delta", s, b, 0, 0.99, bitops=1.2 * b, within=False),  # over budget
                        record("eps", s, b, 0, None, status="failed", error="InfeasibleBudget: too low")]
    return write_results(root / "results", records)


def pareto_pngs(written: list[Path]) -> list[str]:
    """The Pareto plots among the files a rendering wrote (not the figures of ``arqbench.report.inside``)."""
    return sorted(p.name for p in written if p.suffix == ".png" and not p.stem.endswith(INSIDE))


INSIDE = ("-bits", "-learning", "-sensitivity")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """The markdown's tables by the heading above them: rows of cells."""
    out, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ")
        elif line.startswith("|") and not line.startswith("|--") and not line.startswith("|:") and \
                not re.match(r"\|\s*-*:?\|", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[0] != "Rank":
                out.setdefault(heading, []).append(cells)
    return out


def render(results: Path, out: Path, fmt="markdown") -> list[Path]:
    return leaderboard.render(read_all(results), out, fmt, source=results)


def test_fp32_on_top_ranked_by_mean_acr_with_mean_and_std(tmp_path):
    results = standard(tmp_path)
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# arqbench leaderboard: digits", "## sigma = 0.25", "### budget = 2.5% of float BitOPs",
                        "### budget = 5% of float BitOPs", "## sigma = 0.5", "### budget = 2.5% of float BitOPs"]
    body = text.split("## sigma = 0.25")[1].split("### budget = 5%")[0]
    rows = next(iter(tables(body).values()))
    assert [(r[0], r[1]) for r in rows] == [("—", "fp32"), ("1", "beta"), ("2", "alpha"), ("3", "gamma"),
                                           ("—", "delta"), ("—", "eps")]
    columns = [c.strip() for c in re.search(r"\n(\|\s*Rank.*)\n", text).group(1).split("|")[1:-1]]
    assert columns == ["Rank", "Method", "BitOPs %", "Size (KiB)", "Clean acc %", "Smoothed acc %",
                       *[f"Cert@{r} %" for r in RADII], "ACR", "Abstain %", "Search (s)", "Results", "Note"]
    cell = dict(zip(columns, rows[2]))  # alpha: seeds 0.40 and 0.50
    assert cell["ACR"] == "0.450 ± 0.071" and cell["Search (s)"] == "12.5 ± 0.0"
    fp32 = dict(zip(columns, rows[0]))
    assert fp32["ACR"] == "0.505 ± 0.007" and fp32["BitOPs %"] == "100.00 ± 0.00" and fp32["Search (s)"] == "—"
    assert dict(zip(columns, rows[3]))["ACR"] == "0.300"  # one seed left: no ± std
    assert "Protocol: n0 = 100, n = 200, alpha = 0.001, 20 test images" in text


def test_failed_and_over_budget_rows_are_marked_not_hidden(tmp_path):
    render(standard(tmp_path), tmp_path)
    text = (tmp_path / "digits.md").read_text()
    rows = {r[1]: r for r in next(iter(tables(text.split("### budget = 5%")[0]).values()))}
    assert "over budget (seed 0 at 3.00% of float BitOPs, budget 2.5%)" in rows["delta"][-1]
    assert rows["delta"][0] == "—" and rows["delta"][-5] == "0.990"  # its numbers shown, no rank
    assert rows["eps"][0] == "—" and rows["eps"][-1] == "failed: InfeasibleBudget: too low"
    assert rows["gamma"][0] == "3" and rows["gamma"][-1] == r"seed 1 failed: CUDA out of memory \| oops"
    assert len(LINK.findall(rows["gamma"][-2])) == 2  # the failed seed's file is linked too


def test_ties_share_a_rank_options_make_their_own_row_and_commands_are_shown(tmp_path):
    command = "arqbench run --methods a,b,c --budget 0.05 --out r"
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, 0.5), record("a", 0.25, 0.05, 0, 0.4), record("b", 0.25, 0.05, 0, 0.4),
        {**record("c", 0.25, 0.05, 0, 0.3), "command": command},
        record("d", 0.25, 0.025, 0, 0.3, options={"d": {"warmup": 5}})])
    render(results, tmp_path)
    text = (tmp_path / "digits.md").read_text()
    assert f"Results produced by:\n\n```\n{command}\n```" in text  # when the result files record it
    found = tables(text)
    assert [(r[0], r[1]) for r in found["budget = 5% of float BitOPs"]] == [
        ("—", "fp32"), ("1", "a"), ("1", "b"), ("3", "c")]
    assert [r[1] for r in found["budget = 2.5% of float BitOPs"]] == ["fp32", "d (warmup=5)"]


def test_links_are_relative_to_the_leaderboard_and_resolve(tmp_path, monkeypatch):
    """The published layout: result files in leaderboards/results, rendered from the repository root."""
    monkeypatch.chdir(tmp_path)
    standard(tmp_path / "leaderboards")
    written = render(Path("leaderboards/results"), Path("leaderboards"))
    assert written[0] == Path("leaderboards/digits.md")
    text = written[0].read_text()
    links = LINK.findall(text)
    results = [link for link in links if link.endswith(".json")]
    every = {p.relative_to(tmp_path / "leaderboards").as_posix() for p in (tmp_path / "leaderboards").rglob("*.json")}
    assert set(results) == every and len(every) == 28  # every result file is linked from its row
    assert all(link.startswith("results/digits/sigma") for link in results)
    assert all((tmp_path / "leaderboards" / link).is_file() for link in links)
    assert "`arqbench leaderboard --results leaderboards/results --out leaderboards`" in text


def test_csv_and_json_have_one_row_per_leaderboard_row(tmp_path):
    results = standard(tmp_path)
    [path] = render(results, tmp_path, "csv")
    df = pd.read_csv(path)
    # fp32 once per sigma (no budget) + 5 methods x 3 (sigma, budget) tables
    assert len(df) == 2 + 5 * 3
    assert df[df.method == REFERENCE].budget.isna().all()
    row = df[(df.method == "alpha") & (df.sigma == 0.25) & (df.budget == 0.025)].iloc[0]
    assert row["rank"] == 2 and row.acr_mean == pytest.approx(0.45) and row.acr_std == pytest.approx(0.0707, abs=1e-4)
    assert row.seeds == "0 1" and row.ok_seeds == 2
    assert all((tmp_path / p).is_file() for p in row.results.split())
    assert df[df.method == "eps"].acr_mean.isna().all() and df[df.method == "eps"]["rank"].isna().all()
    assert {f"cert@{r}_mean" for r in RADII} <= set(df.columns)

    [path] = render(results, tmp_path, "json")
    data = json.loads(path.read_text())
    assert data["benchmark"] == "digits" and list(data["protocols"]) == [""]
    assert data["protocols"][""]["n"] == 200 and len(data["rows"]) == len(df)
    gamma = next(r for r in data["rows"] if r["method"] == "gamma" and r["budget"] == 0.05)
    assert [(run["seed"], run["status"]) for run in gamma["runs"]] == [(0, "ok"), (1, "failed")]
    assert gamma["runs"][0]["acr"] == 0.30 and gamma["rank"] == 3


def test_pareto_png_per_sigma_is_valid_linked_and_deterministic(tmp_path):
    results = standard(tmp_path)
    out = tmp_path / "board"
    written = render(results, out)
    pngs = pareto_pngs(written)
    assert pngs == ["digits-sigma0.25.png", "digits-sigma0.5.png"]
    text = (out / "digits.md").read_text()
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
        assert f"]({name})" in text
    assert text.index("(digits-sigma0.5.png)") > text.index("## sigma = 0.5")
    before = {name: (out / name).read_bytes() for name in pngs}
    render(results, out)
    assert {name: (out / name).read_bytes() for name in pngs} == before
    assert not list(out.glob(".*.tmp"))


def test_protocols_are_never_averaged_together(tmp_path):
    """Two result dirs (n = 200 and n = 2000) under one --results: separate protocols, each with its fp32 row."""
    write_results(tmp_path / "results/small", [
        record(REFERENCE, 0.25, None, 0, 0.5), record("a", 0.25, 0.05, 0, 0.40), record("a", 0.25, 0.05, 1, 0.42),
        record("b", 0.25, 0.05, 0, 0.30)])
    write_results(tmp_path / "results/large", [
        record(REFERENCE, 0.25, None, 0, 0.6, n=2000), record("a", 0.25, 0.05, 0, 0.10, n=2000)])
    written = render(tmp_path / "results", tmp_path)
    text = (tmp_path / "digits.md").read_text()
    assert "- **A**: n0 = 100, **n = 200**" in text and "- **B**: n0 = 100, **n = 2000**" in text
    sections = text.split("## sigma = 0.25, protocol ")
    assert [s[0] for s in sections[1:]] == ["A", "B"]
    a, b = (next(iter(tables(s).values())) for s in sections[1:])
    assert [(r[0], r[1], r[-5]) for r in a] == [
        ("—", "fp32", "0.500"), ("1", "a", "0.410 ± 0.014"), ("2", "b", "0.300")]
    assert [(r[0], r[1], r[-5]) for r in b] == [("—", "fp32", "0.600"), ("1", "a", "0.100")]
    assert pareto_pngs(written) == ["digits-sigma0.25-A.png", "digits-sigma0.25-B.png"]
    df = pd.read_csv(render(tmp_path / "results", tmp_path, "csv")[0])
    assert sorted(df.protocol) == ["A", "A", "A", "B", "B"]


def test_the_same_cell_twice_and_an_empty_dir_are_one_line_errors(tmp_path, cli):
    for run in ("one", "two"):
        write_results(tmp_path / "results" / run, [record("a", 0.25, 0.05, 0, 0.4)])
    with pytest.raises(ArqbenchError, match="are the same cell .* keep one of them out of --results"):
        render(tmp_path / "results", tmp_path)
    (tmp_path / "empty").mkdir()
    code, out, err = cli("leaderboard", "--results", tmp_path / "empty", "--out", tmp_path / "board")
    assert code == 2 and err.count("\n") == 1 and "no results to rank" in err


def test_other_base_model_is_marked_and_unranked(tmp_path):
    results = write_results(tmp_path / "r", [
        record(REFERENCE, 0.25, None, 0, 0.5), record("a", 0.25, 0.05, 0, 0.4),
        record("b", 0.25, 0.05, 0, 0.45, base="other")])
    render(results, tmp_path)
    rows = next(iter(tables((tmp_path / "digits.md").read_text()).values()))
    assert [(r[0], r[1]) for r in rows] == [("—", "fp32"), ("1", "a"), ("—", "b")]
    assert "other base model (other) than the fp32 row (base0)" in rows[-1][-1]


def test_leaderboard_cli_writes_each_format(tmp_path, cli):
    results = standard(tmp_path)
    for fmt, name in (("markdown", "digits.md"), ("csv", "digits.csv"), ("json", "digits.json")):
        code, out, err = cli("leaderboard", "--results", results, "--out", tmp_path / "board", "--format", fmt)
        assert code == 0, err
        assert (tmp_path / "board" / name).is_file() and f"wrote {tmp_path / 'board' / name}" in err.replace("\n", "")


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
    board = (tmp_path / "digits.md").read_text()
    assert code == 0 and "[0](results/digits/sigma0.25/budget0.05/uniform-seed0.json)" in board
