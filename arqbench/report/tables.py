"""From result files to leaderboard tables: rows per method, intervals over images, paired ranks.

A row is one method in one (protocol, sigma, budget): the mean (and sample std) over its seeds that
succeeded of every number, and ACR with its 95% interval over the test images (``smoothing.intervals``:
each image's radius averaged over the seeds first).

Ranks come from all pairs of ranked rows, compared paired image by image (``intervals.all_pairs``: paired
t-test of the per-image radii, Holm's correction over the table's pairs, significant at 5%): a row's
rank is 1 + the number of rows significantly better than it, as Chatbot Arena ranks models, so a chain
of rows each close to the next cannot join rows that differ. Several rows can share a rank (shown
``k=``), and since a rank counts only the rows significantly better, the next rank need not skip past a
shared one: 1=, 1=, 2 when only the first row beats the third. Rows are ordered by rank, then mean ACR.
The compact letter display (``letters``) says which rows do not differ: two rows sharing a letter are
not significantly different. A row without per-image certificates cannot be compared: nothing is
significantly better than it, and it holds every letter.

Ranks across base models: where a table's seeds quantize different base models (``--base-seeds per-seed``),
each ranked row says on how many of them its ACR is at least the next ranked row's (``order_holds``): a rank
that the paired test calls significant may still be one network's, and this says whether the order is.

Nothing is hidden: a row with failed seeds, over its budget, or measured on another base model than the
fp32 row stays in its table with a note; only rows within budget on the fp32 row's base model are ranked.

Results made under different protocol settings (n0, n, alpha, test images, fine-tune, quantizer, cost
model, the options of plugins other than the row's own method, ...) are never averaged or ranked
together: each distinct setting is a protocol, named A, B, ... when a benchmark has several. The fp32
row, which records only certification settings, joins every protocol whose settings it matches.
"""

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from scipy.stats import norm

from arqbench.errors import ArqbenchError
from arqbench.pipeline.results import REFERENCE
from arqbench.report.letters import compact_letters
from arqbench.pipeline.timing import BUSY_RATIO, cpu_share, search_timing
from arqbench.smoothing.intervals import (
    Comparison,
    Interval,
    all_pairs,
    mean_interval,
    paired_difference,
    per_image,
    seed_mean,
)

MAX_RADII = 3  # certified-accuracy columns per markdown table (every radius is in the csv/json)


@dataclass
class Row:
    """One method in one table: its runs (one per seed) and their aggregate."""

    method: str  # the method's name, with its own --option settings if any: "haq (warmup=5)"
    runs: list[dict]
    mean: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)  # None where fewer than two seeds succeeded
    images: dict = field(default_factory=dict)  # image index -> radius-if-correct, averaged over seeds
    acr: Interval | None = None  # ACR's 95% interval over the images
    vs_above: Interval | None = None  # paired interval of (row above - this row) ACR, per image (unadjusted)
    holds: tuple[int, int] | None = None  # (agree, base models): ``order_holds`` against the next ranked row
    notes: list[str] = field(default_factory=list)
    flagged: bool = False  # over budget or another base model: shown, not ranked
    rank: int | None = None  # 1 + the ranked rows significantly better than this one
    tied: bool = False  # another ranked row has the same rank
    letters: str = ""  # compact letter display: rows sharing a letter do not differ significantly

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "ok"]

    @property
    def rankable(self) -> bool:
        return self.method != REFERENCE and bool(self.ok) and not self.flagged

    @property
    def rank_label(self) -> str:
        return "—" if self.rank is None else f"{self.rank}{'=' * self.tied}"


@dataclass
class Table:
    protocol: str  # "" when the benchmark has one protocol, else "A", "B", ...
    sigma: float
    budget: float | None  # None: a sigma with only the fp32 row
    rows: list[Row]
    pairs: list[Comparison] = field(default_factory=list)  # every two ranked rows, upper first


@dataclass
class Board:
    """Everything rendered for one benchmark."""

    benchmark: str
    protocols: dict[str, dict]  # label -> settings
    tables: list[Table]
    runs: list[dict]
    radii: list[str]

    def sigmas(self):
        """(protocol, sigma, its tables) in section order. A protocol whose only rows at a sigma are the float
        model's, which it shares with another protocol's section there, gets no section of its own."""
        keys = sorted({(t.protocol, t.sigma) for t in self.tables})
        ranked = {(t.protocol, t.sigma) for t in self.tables if t.budget is not None}
        for protocol, sigma in keys:
            if (protocol, sigma) not in ranked and any(s == sigma for _, s in ranked):
                continue
            yield protocol, sigma, [t for t in self.tables if (t.protocol, t.sigma) == (protocol, sigma)]

    def cost_model(self, protocol: str) -> str:
        return self.protocols[protocol].get("cost_model", "bitops")

    def radius_cap(self, protocol: str, sigma: float) -> float:
        """The largest radius the protocol can certify: sigma * Phi^-1(alpha^(1/n)) (all n samples agree)."""
        s = self.protocols[protocol]
        n, alpha = s.get("n"), s.get("alpha")
        return math.inf if not (n and alpha) else sigma * float(norm.ppf(alpha ** (1 / n)))

    def shown_radii(self, protocol: str, sigma: float) -> list[str]:
        """The certified-accuracy radii of a markdown table: those the protocol can certify, at most
        MAX_RADII of them, spread over the range."""
        cap = self.radius_cap(protocol, sigma)
        radii = [r for r in self.radii if float(r) <= cap]
        if len(radii) <= MAX_RADII:
            return radii
        picks = sorted({round(i * (len(radii) - 1) / (MAX_RADII - 1)) for i in range(MAX_RADII)})
        return [radii[i] for i in picks]


def flatten(result: dict) -> dict:
    """One result file as a flat record: identity, protocol, and (when it succeeded) its numbers."""
    protocol = dict((result.get("config") or {}).get("protocol") or {})
    options = dict(protocol.pop("options", None) or {})
    own = options.pop(result["method"], None) or {}
    if options:
        protocol["options"] = options
    method = result["method"] + (f" ({', '.join(f'{k}={v}' for k, v in sorted(own.items()))})" if own else "")
    versions = result.get("versions") or {}
    command = result.get("command")
    run = {"benchmark": result["benchmark"], "method": method, "sigma": float(result["sigma"]),
           "budget": None if result.get("budget") is None else float(result["budget"]), "seed": result.get("seed"),
           "status": result["status"], "error": result.get("error"), "path": result.get("path"),
           "settings": protocol, "protocol": json.dumps(protocol, sort_keys=True),
           "base": (result.get("base_model") or {}).get("fingerprint"),
           "command": " ".join(map(str, command)) if isinstance(command, list) else command,
           "software": ", ".join(f"{k} {versions[k]}" for k in ("arqbench", "torch", "device") if versions.get(k)),
           "values": {}, "images": {}, "certificates": []}
    if result["status"] == "ok":
        try:
            m, c = result["metrics"], result["cost"]
            models = c.get("models") or {  # result files of arqbench 0.1
                "bitops": {"cost": c["bitops"], "fraction": c["bitops_fraction"]},
                "size": {"cost": c["size_bits"], "fraction": c["size_fraction"]}}
            search = search_timing(result)  # own, wait, reused and their cost, derived for older files
            run["values"] = {
                **{f"{name}_pct": 100 * model["fraction"] for name, model in models.items()},
                **({"size_kib": models["size"]["cost"] / 8 / 1024} if "size" in models else {}),
                "clean_acc": m["clean_acc"], "smoothed_acc": m["smoothed_acc"],
                **{f"cert@{radius}": value for radius, value in m["certified_acc"].items()},
                "acr": m["acr"], "abstain_rate": m["abstain_rate"],
                **{k: None if result["method"] == REFERENCE else v for k, v in search.items()},
            }
            run["certificates"] = result.get("certificates") or []
            run["images"] = per_image(run["certificates"])
            run["cost_pct"] = 100 * c["fraction"]
            run["cost_model"] = c.get("cost_model", "bitops")
            run["within_budget"] = c.get("within_budget", True)
            run["frozen_batchnorm"] = bool((result.get("finetune") or {}).get("frozen_batchnorm"))
            run["cpu_share"] = cpu_share(result)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArqbenchError(f"result file {result.get('path')} lacks {exc} of a finished cell; "
                                f"re-run that cell with --force") from None
    return run


def boards(results: list[dict]) -> list[Board]:
    runs = [flatten(r) for r in results]
    return [board(name, [r for r in runs if r["benchmark"] == name]) for name in sorted({r["benchmark"] for r in runs})]


def board(benchmark: str, runs: list[dict]) -> Board:
    labels = protocol_labels(runs)
    placed = []  # (protocol label, run); an fp32 run once per protocol it joins
    for run in runs:
        placed += [(label, run) for label in labels[run["protocol"]]]
    placed = _refuse_duplicates(placed)
    radii = sorted({k[5:] for r in runs for k in r["values"] if k.startswith("cert@")}, key=float)
    tables = []
    for protocol, sigma in sorted({(label, run["sigma"]) for label, run in placed}):
        here = [run for label, run in placed if (label, run["sigma"]) == (protocol, sigma)]
        reference = [r for r in here if r["method"] == REFERENCE]
        budgets = sorted({r["budget"] for r in here if r["method"] != REFERENCE and r["budget"] is not None})
        base = _expected_base(here)
        for budget in budgets or [None]:
            cell = reference + [r for r in here if r["method"] != REFERENCE and r["budget"] == budget]
            tables.append(Table(protocol, sigma, budget, *rank(aggregate(cell, base, budget))))
    settings = {}
    for key, names in labels.items():
        for label in names:
            settings.setdefault(label, json.loads(key))
    return Board(benchmark, dict(sorted(settings.items())), tables, runs, radii)


def _joins(reference: dict, settings: dict) -> bool:
    """Whether an fp32 row's (certification) settings agree with a protocol's."""
    for key, value in reference.items():
        if key == "options":  # the certifier's options: each must be the protocol's
            theirs = settings.get("options") or {}
            if any(theirs.get(name) != opts for name, opts in value.items()):
                return False
        elif settings.get(key) != value:
            return False
    return bool(reference)


def protocol_labels(runs: list[dict]) -> dict[str, list[str]]:
    """Each distinct protocol key -> the labels of the protocols it belongs to ("" when there is one).

    Quantized runs define the protocols (most results first); an fp32 run belongs to every protocol
    whose settings include its certification settings, or to a protocol of its own.
    """
    counts = Counter(r["protocol"] for r in runs if r["method"] != REFERENCE)
    keys = sorted(counts, key=lambda k: (-counts[k], k))
    joins = {}
    for run in runs:
        if run["method"] == REFERENCE and run["protocol"] not in joins:
            joins[run["protocol"]] = [k for k in keys if _joins(run["settings"], json.loads(k))]
    keys += sorted(k for k, joined in joins.items() if not joined and k not in counts)
    name = {k: "" if len(keys) == 1 else (chr(ord("A") + i) if i < 26 else f"P{i + 1}") for i, k in enumerate(keys)}
    labels = {k: [name[k]] for k in keys}
    labels.update({k: [name[j] for j in joined] for k, joined in joins.items() if joined})
    return labels


def _refuse_duplicates(placed: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """``placed`` without repeats; two result files of one cell under one protocol are an error, except the
    fp32 row found identical in several runs' folders (runs that differ only in what the fp32 row does not
    record, e.g. their quantizer, each certify the float model)."""
    seen, kept = {}, []
    for label, run in placed:
        key = (label, run["sigma"], run["budget"], run["method"], run["seed"])
        other = seen.get(key)
        if other is not None and other["path"] != run["path"]:
            if run["method"] == REFERENCE and (other["values"], other["images"]) == (run["values"], run["images"]):
                continue
            raise ArqbenchError(
                f"{other['path']} and {run['path']} are the same cell ({run['method']} sigma={run['sigma']:g} "
                f"budget={run['budget']} seed={run['seed']}) under the same protocol; "
                f"keep one of them out of --results")
        seen[key] = run
        kept.append((label, run))
    return kept


def _expected_base(runs: list[dict]) -> set:
    """The base model(s) rows must share: the fp32 rows', else the most common one among the results."""
    reference = {r["base"] for r in runs if r["method"] == REFERENCE and r["base"]}
    if reference:
        return reference
    common = Counter(r["base"] for r in runs if r["status"] == "ok" and r["base"]).most_common(1)
    return {common[0][0]} if common else set()


def aggregate(runs: list[dict], base: set, budget: float | None) -> list[Row]:
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        row = Row(method, sorted(mine, key=lambda r: (r["seed"] is None, r["seed"])))
        keys = dict.fromkeys(k for r in row.ok for k in r["values"])
        for key in keys:
            values = [r["values"][key] for r in row.ok if r["values"].get(key) is not None]
            values = [v for v in values if not math.isnan(v)]
            row.mean[key] = sum(values) / len(values) if values else None
            row.std[key] = statistics.stdev(values) if len(values) > 1 else None
        certified = [r["images"] for r in row.ok if r["images"]]
        if certified and len(certified) == len(row.ok):
            row.images = seed_mean(certified)
            row.acr = mean_interval(row.images.values()) if row.images else None
        _note(row, base, budget)
        rows.append(row)
    return rows


def _note(row: Row, base: set, budget: float | None) -> None:
    failed = [r for r in row.runs if r["status"] != "ok"]
    if failed:
        errors = "; ".join(dict.fromkeys(str(r["error"]) for r in failed))
        row.notes.append(f"failed: {errors}" if not row.ok
                         else f"seed {', '.join(str(r['seed']) for r in failed)} failed: {errors}")
    frozen = [r for r in row.ok if r.get("frozen_batchnorm")]
    if frozen:  # ranked as usual, but its model was fine-tuned by the fallback (arqbench.models.training.finetune)
        seeds = ", ".join(str(r["seed"]) for r in frozen)
        row.notes.append(f"seed {seeds}: the fine-tune diverged and reran with BatchNorm frozen")
    busy = [r for r in row.ok if r.get("cpu_share") is not None and r["cpu_share"] < BUSY_RATIO]
    if busy:  # its seconds are the machine's load as much as the method's cost (arqbench.pipeline.timing.cpu_share)
        row.notes.append("timed beside other work: " + ", ".join(f"seed {r['seed']} had the CPU "
                                                                  f"{r['cpu_share']:.0%} of its wall time" for r in busy))
    over = [r for r in row.ok if r["method"] != REFERENCE and not r["within_budget"]]
    if over:
        row.flagged = True
        where = ", ".join(f"seed {r['seed']} at {r['cost_pct']:.2f}%" for r in over)
        row.notes.append(f"over budget ({where} of float {cost_name(over[0]['cost_model'])}, budget "
                         f"{100 * budget:g}%)")
    other = sorted({r["base"] for r in row.ok if r["base"] and base and r["base"] not in base})
    if other and row.method != REFERENCE:
        row.flagged = True
        row.notes.append(f"other base model ({', '.join(other)}) than the fp32 row ({', '.join(sorted(base))})")


def rank(rows: list[Row]) -> tuple[list[Row], list[Comparison]]:
    """The table's rows and the comparisons of its ranked rows (module docstring): fp32 first; then ranked
    rows by rank and mean ACR; then unranked rows with numbers; then failed ones."""
    ranked = sorted((r for r in rows if r.rankable), key=lambda r: (-_acr(r), r.method))
    pairs = all_pairs({r.method: r.images for r in ranked if r.images})
    worse = Counter(p.b if p.difference.mean > 0 else p.a for p in pairs if p.significant)
    for row in ranked:
        row.rank = 1 + worse[row.method]
    ranked.sort(key=lambda r: (r.rank, -_acr(r), r.method))
    shared = Counter(r.rank for r in ranked)
    letters = compact_letters([r.method for r in ranked], [(p.a, p.b) for p in pairs if p.significant])
    for i, row in enumerate(ranked):
        row.tied, row.letters = shared[row.rank] > 1, letters[row.method]
        above = ranked[i - 1] if i else None
        row.vs_above = paired_difference(above.images, row.images) if above and above.images and row.images else None
    for upper, lower in zip(ranked, ranked[1:]):
        upper.holds = order_holds(upper, lower)
    order = {r.method: i for i, r in enumerate(ranked)}
    pairs = sorted((p if order[p.a] < order[p.b] else p.flipped() for p in pairs),
                   key=lambda p: (order[p.a], order[p.b]))
    reference = [r for r in rows if r.method == REFERENCE]
    flagged = sorted((r for r in rows if r.method != REFERENCE and r.flagged and r.ok),
                     key=lambda r: (-_acr(r), r.method))
    failed = sorted((r for r in rows if r.method != REFERENCE and not r.ok), key=lambda r: r.method)
    return reference + ranked + flagged + failed, pairs


def order_holds(upper: Row, lower: Row) -> tuple[int, int] | None:
    """On how many of the base models both rows ran on ``upper``'s ACR is at least ``lower``'s (each row's ACR
    on a base model: the mean over its seeds on it), out of how many; None where they share fewer than two, so
    the table's order is one network's."""
    def by_base(row: Row) -> dict:
        acrs: dict = {}
        for run in row.ok:
            if run["base"] and run["values"].get("acr") is not None:
                acrs.setdefault(run["base"], []).append(run["values"]["acr"])
        return {base: sum(values) / len(values) for base, values in acrs.items()}

    mine, theirs = by_base(upper), by_base(lower)
    shared = sorted(set(mine) & set(theirs))
    if len(shared) < 2:
        return None
    return sum(mine[base] >= theirs[base] for base in shared), len(shared)


def _acr(row: Row) -> float:
    value = row.mean.get("acr")
    return -math.inf if value is None else round(value, 12)


COST_NAMES = {"bitops": "BitOPs"}


def cost_name(name: str) -> str:
    return COST_NAMES.get(name, name)
