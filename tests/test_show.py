"""Inside a search: `arqbench show`, and the figures + CSVs `arqbench leaderboard` writes, checked against the
result files they are drawn from."""

import io
import json

import pandas as pd
import pytest
from conftest import TINY
from rich.console import Console

from arqbench.pipeline.results import read
from arqbench.report import show as shows

METHODS = ["haq", "hawq", "uniform"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, quick_digits_checkpoint):
    """A small digits sweep: haq, hawq, uniform at one sigma and two budgets, activations searched."""
    from arqbench.cli import main

    out = tmp_path_factory.mktemp("sweep")
    code = main(["run", "--methods", ",".join(METHODS), "--sigma", "0.25", "--budget", "0.02,0.03",
                 "--search-activations", "--episodes", "4", "--option", "haq.warmup=2", "--option", "hawq.batches=1",
                 "--option", "hawq.max_iter=3", "--checkpoint", str(quick_digits_checkpoint), "--out", str(out),
                 *TINY])
    assert code == 0
    return out


def results(folder):
    return {p.stem.split("-seed")[0]: read(p) for p in folder.glob("*.json")}


def test_show_prints_every_layer_with_each_methods_bits(cli, sweep, monkeypatch):
    from arqbench import console

    monkeypatch.setattr(console.stdout, "_width", 120)  # one table (tests/test_narrow_tables.py: at 80)
    folder = sweep / "digits/sigma0.25/budget0.02"
    code, out, err = cli("show", folder)
    assert code == 0, err
    records = results(folder)
    for layer in records["haq"]["policy"]:
        line = next(l for l in out.splitlines() if l.split() and l.split()[0] == layer)
        assert line.split()[-3:] == [f"{w}/{a}" for w, a in (records[m]["policy"][layer] for m in METHODS)]
    assert "fp32 ACR" in out and "± 95%" in out


def test_show_fits_a_100_column_terminal(sweep):
    shown = shows.collect(sweep / "digits/sigma0.25/budget0.02")
    console = Console(file=io.StringIO(), width=100)
    console.print(shows.table(shown))
    text = console.file.getvalue()
    assert max(map(len, text.splitlines())) <= 100
    assert "…" not in text and "net.block2.shortcut.0" in text


def test_show_csv_and_json_match_the_result_files(cli, sweep):
    folder = sweep / "digits/sigma0.25/budget0.03"
    records = results(folder)
    code, out, err = cli("show", folder, "--format", "csv")
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert set(frame["method"]) == {"fp32", *METHODS}
    for method in METHODS:
        mine = frame[frame["method"] == method].sort_values("index")
        assert [[w, a] for w, a in zip(mine["w_bits"], mine["a_bits"])] == list(records[method]["policy"].values())
        assert mine["acr"].iloc[0] == pytest.approx(records[method]["metrics"]["acr"])
        assert mine["cost_fraction"].iloc[0] == pytest.approx(records[method]["cost"]["fraction"])
        assert (mine["acr_low"] <= mine["acr"]).all() and (mine["acr"] <= mine["acr_high"]).all()
    assert frame.groupby("method")["float_cost_share"].sum().round(9).eq(1).all()
    code, out, _ = cli("show", folder / "hawq-seed0.json", "--format", "json")
    data = json.loads(out)
    assert [m["method"] for m in data["methods"]] == ["fp32", "hawq"]
    assert [l["layer"] for l in data["layers"]] == list(records["hawq"]["policy"])
    assert data["layers"][0]["macs"] == records["hawq"]["layers"][0]["macs"]


def test_show_errors_are_one_line(cli, sweep):
    for args, message in (((sweep / "nope",), "does not exist"),
                          ((sweep / "digits/sigma0.25",), "pass one budget folder"),
                          ((sweep / "digits/sigma0.25/fp32-seed0.json",), "float model's row"),
                          ((sweep / "digits/sigma0.25/budget0.02", "--seed", "9"), "no result for seed 9")):
        code, _, err = cli("show", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_show_of_a_saved_model_shows_its_result_and_never_calls_a_valid_file_broken(cli, sweep, tmp_path):
    budget = sweep / "digits/sigma0.25/budget0.02"
    code, of_model, err = cli("show", budget / "hawq-seed0.pt", "--format", "json")
    assert code == 0, err
    code, of_result, err = cli("show", budget / "hawq-seed0.json", "--format", "json")
    assert code == 0 and of_model == of_result and json.loads(of_model)["methods"][-1]["method"] == "hawq"
    alone = tmp_path / "hawq-seed0.pt"
    alone.write_bytes((budget / "hawq-seed0.pt").read_bytes())  # a saved model without its result
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n")
    for path, message in ((alone, f"certify a saved model with `arqbench certify --model {alone}`"),
                          (notes, "is not a result file (.json)")):
        code, _, err = cli("show", path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert "delete" not in err and "not valid JSON" not in err


def test_leaderboard_writes_bits_and_learning_figures_with_their_data(cli, sweep, tmp_path):
    stale = tmp_path / "digits-sigma9-budget0.5-learning.png"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    code, _, err = cli("leaderboard", "--results", sweep, "--out", tmp_path)
    assert code == 0, err
    assert not stale.exists()  # figures of cells no longer in the results are pruned
    markdown = (tmp_path / "digits.md").read_text()
    for name in ("digits-sigma0.25-bits", "digits-sigma0.25-budget0.02-learning",
                 "digits-sigma0.25-budget0.03-learning"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert f"({name}.png)" in markdown and f"({name}.csv)" in markdown

    bits = pd.read_csv(tmp_path / "digits-sigma0.25-bits.csv")
    for budget in (0.02, 0.03):
        records = results(sweep / f"digits/sigma0.25/budget{budget:g}")
        for method in METHODS:
            mine = bits[(bits["budget"] == budget) & (bits["method"] == method)].sort_values("index")
            assert dict(zip(mine["layer"], ([w, a] for w, a in zip(mine["w_bits"], mine["a_bits"])))) == \
                records[method]["policy"]
            macs = {l["name"]: l["macs"] for l in records[method]["layers"]}
            total = sum(macs.values())
            assert mine["float_cost_share"].tolist() == pytest.approx([macs[n] / total for n in mine["layer"]])

    learning = pd.read_csv(tmp_path / "digits-sigma0.25-budget0.02-learning.csv")
    assert set(learning["method"]) == {"haq"}  # hawq and uniform score no candidates
    haq = results(sweep / "digits/sigma0.25/budget0.02")["haq"]
    history = haq["search"]["history"]
    assert learning["reward"].tolist() == pytest.approx([h["reward"] for h in history])
    assert learning["cost"].tolist() == pytest.approx([h["cost"] for h in history])
    assert [json.loads(p) for p in learning["policy"]] == [h["policy"] for h in history]
    rewards = pd.Series([h["reward"] for h in history])
    assert learning["best_reward"].tolist() == pytest.approx(rewards.cummax().tolist())
    shipped = learning[learning["shipped"]]
    assert len(shipped) == 1 and shipped["final_acr"].iloc[0] == pytest.approx(haq["metrics"]["acr"])
    assert json.loads(shipped["policy"].iloc[0]) == haq["policy"]


def test_the_candidate_front_is_the_pareto_front():
    from arqbench.report.inside import candidates_frame

    history = [{"episode": i, "policy": {"a": [b, 8]}, "cost": c, "reward": r, "acr": acr, "revisit": rv}
               for i, (b, c, r, acr, rv) in enumerate([(2, 0.01, -3, 0.1, False), (3, 0.02, -1, 0.3, False),
                                                       (4, 0.03, -2, 0.2, False), (5, 0.04, 0, 0.4, False),
                                                       (3, 0.02, -1, 0.3, True), (6, 0.04, -0.5, 0.35, False)])]
    result = {"method": "arq", "seed": 0, "policy": {"a": [5, 8]}, "metrics": {"acr": 0.45},
              "search": {"history": history}}
    frame = candidates_frame([(0.05, "arq", result)])
    assert frame["pareto"].tolist() == [True, True, False, True, False, False]
    assert frame["shipped"].tolist() == [False, False, False, True, False, False]
    assert frame["best_reward"].tolist() == [-3, -1, -1, 0, 0, 0]
