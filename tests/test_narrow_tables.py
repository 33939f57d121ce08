"""Every table the CLI prints reads at 80 columns off a terminal: no line is wider, and no method name or number
is split across lines (a table too wide is printed as several, each repeating the columns that name a row)."""

import json
import re

import pytest
from conftest import PUBLISHED_02, TINY, run_subprocess

from arqbench import console

MOBILENET = PUBLISHED_02 / "digits-mobilenetv2" / "sigma0.25" / "budget0.02"  # 20 layers, six methods


@pytest.fixture
def columns80(monkeypatch):
    """The CLI's stdout console at 80 columns, as COLUMNS=80 sets it for a pipe."""
    monkeypatch.setattr(console.stdout, "_width", 80)


def numbers(text: str) -> set[str]:
    return set(re.findall(r"±?\d+(?:\.\d+)?(?:/\d+)?%?", text))


def assert_fits(out: str, words) -> None:
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    assert "…" not in out
    for word in words:
        assert any(word in line for line in lines), f"{word!r} is not whole on any line"


def test_show_at_80_columns_keeps_every_method_and_number_whole():
    """Run as a user pipes it (`COLUMNS=80 arqbench show ... | cat`), on MobileNetV2's 20 layers and six methods."""
    done = run_subprocess("show", MOBILENET, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    results = [json.loads(p.read_text()) for p in sorted(MOBILENET.glob("*-seed0.json"))]
    words = {r["method"] for r in results} | {"robust-ilp", "2.00", "0.543", "±0.031", "net.blocks.5.depthwise"}
    words |= {f"{100 * r['cost']['fraction']:.2f}" for r in results} | {f"{r['metrics']['acr']:.3f}" for r in results}
    assert_fits(done.stdout, words)
    lines = done.stdout.splitlines()
    for r in results:  # each method's bits of a layer, in its own column of that layer's row
        header = next(i for i, l in enumerate(lines) if r["method"] in l.split())
        row = next(l for l in lines[header:] if l.split()[:1] == ["net.head"])
        w, a = r["policy"]["net.head"]
        assert row.split()[lines[header].split().index(r["method"])] == f"{w}/{a}"


def test_show_at_a_wide_window_is_one_table(monkeypatch, cli):
    monkeypatch.setattr(console.stdout, "_width", 160)
    code, out, err = cli("show", MOBILENET)
    assert code == 0, err
    assert out.count("layer ") == 1 and "MACs" in out and "uniform" in out


def test_profile_certify_list_and_dry_run_fit_80_columns(columns80, cli, quick_digits_checkpoint, tmp_path):
    code, out, err = cli("profile", "--checkpoint", quick_digits_checkpoint, "--images", "3", "--out", tmp_path, *TINY)
    assert code == 0, err
    assert_fits(out, {"net.block2.shortcut.0", "layer \\ b"})
    header = next(l for l in out.splitlines() if l.startswith("layer"))
    assert header.split()[3:] == [str(b) for b in range(2, 9)]  # every bit-width's column, none cut
    code, out, err = cli("certify", "--checkpoint", quick_digits_checkpoint, "--certifiers", "irs,rs", *TINY)
    assert code == 0, err
    assert_fits(out, {"irs", "rs", "smoothed acc", "seconds"})
    assert len(numbers(out)) > 4
    code, out, err = cli("list")
    assert code == 0, err
    assert_fits(out, {"robust-ilp", "digits-mobilenetv2", "mobilenetv2-imagenet"})
    code, out, err = cli("run", "--dry-run", "--benchmark", "digits,digits-mobilenetv2", "--methods",
                         "robust-ilp,uniform", "--budget", "0.02", "--out", tmp_path / "dry", *TINY)
    assert code == 0, err
    assert_fits(out, {"digits-mobilenetv2", "robust-ilp", "fine-tune", "certify", "time"})
    assert out.count("digits-mobilenetv2  0.25   0.02    robust-ilp") == 2  # both halves name their rows


def test_fitted_splits_by_columns_and_repeats_the_key():
    from rich.table import Table

    table = Table(title="t", caption="c")
    for name in ["key", *[f"column{i}" for i in range(12)]]:
        table.add_column(name, no_wrap=True)
    table.add_row("row", *[f"{i}.{i}{i}{i}{i}" for i in range(12)])
    parts = console.fitted(table, 80)
    assert len(parts) > 1
    assert all(console.natural_width(t) <= 80 and t.columns[0].header == "key" for t in parts)
    assert [c.header for t in parts for c in t.columns[1:]] == [f"column{i}" for i in range(12)]
    assert [t.title for t in parts] == ["t"] + [None] * (len(parts) - 1)
    assert [t.caption for t in parts] == [None] * (len(parts) - 1) + ["c"]
    assert console.fitted(table, 400) == [table]
