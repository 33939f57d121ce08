"""A search's history is stored compactly in its result file and read back exactly."""

import json

from arqbench.pipeline import history
from arqbench.pipeline.results import read, write


def record(k: int, layers: list[str]) -> dict:
    return {"episode": k, "policy": {name: [2 + (k + i) % 7, 8] for i, name in enumerate(layers)}, "cost": 0.01 * k,
            "reward": -0.5 + k / 100, "revisit": k % 3 == 0, "acr": None if k == 2 else 0.3, "fallbacks": 0}


def result(search: dict) -> dict:
    return {"benchmark": "digits", "method": "arq", "sigma": 0.25, "budget": 0.025, "seed": 0, "status": "failed",
            "error": "kept for the test", "config": {"protocol": {}}, "search": search}


def test_a_history_round_trips_through_a_result_file_and_shrinks(tmp_path):
    layers = [f"net.features.{i}.conv.0" for i in range(40)]
    records = [record(k, layers) for k in range(200)]
    write(tmp_path / "arq-seed0.json", result({"history": records, "best_episode": 7}))
    back = read(tmp_path / "arq-seed0.json")
    assert back["search"]["history"] == records and back["search"]["best_episode"] == 7
    stored = json.loads((tmp_path / "arq-seed0.json").read_text())["search"]["history"]
    assert stored["layers"] == layers and len(stored["rows"]) == 200
    plain = len(json.dumps(result({"history": records}), indent=1))
    assert (tmp_path / "arq-seed0.json").stat().st_size < plain / 5
    assert (tmp_path / "arq-seed0.json").read_text().count("\n") < 300  # a row per line


def test_a_history_of_mixed_records_is_stored_as_it_is():
    layers = ["a", "b"]
    mixed = [record(0, layers), {**record(1, layers), "extra": 1}]
    assert history.compact(mixed) == mixed and history.expand(mixed) == mixed
    other_layers = [record(0, layers), record(1, ["a", "c"])]
    assert history.compact(other_layers) == other_layers
    assert history.expand(history.compact([record(0, layers)])) == [record(0, layers)]
