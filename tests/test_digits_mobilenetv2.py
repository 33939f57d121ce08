"""Benchmark ``digits-mobilenetv2``: its architecture by hand, its ties, its data, and a short CLI run."""

import json

import pytest
import torch
from conftest import TINY
from torch import nn

from arqbench import plugins
from arqbench.models import checkpoints
from arqbench.quantization.layers import profile_layers


@pytest.fixture(scope="module")
def bench():
    return plugins.create("benchmark", "digits-mobilenetv2")


def hand_computed_layers():
    """(layer, MACs, weights) written out from the architecture, 8x8 input: stem 3x3 1->16; blocks (t, c, s) =
    (1, 8, 1), (6, 16, 2), (6, 16, 1), (6, 24, 2), (6, 24, 1), (6, 24, 1); head 1x1 24->64; fc 64->10.
    A conv's MACs are H_out * W_out * C_out * (C_in / groups) * k * k; its weights C_out * (C_in / groups) * k * k."""
    return [
        ("net.stem", 8 * 8 * 16 * 1 * 9, 16 * 9),
        # block 0, 16 -> 8 at 8x8, no expansion
        ("net.blocks.0.depthwise", 8 * 8 * 16 * 9, 16 * 9),
        ("net.blocks.0.project", 8 * 8 * 8 * 16, 8 * 16),
        # block 1, 8 -> 16, hidden 48, stride 2: 8x8 -> 4x4
        ("net.blocks.1.expand", 8 * 8 * 48 * 8, 48 * 8),
        ("net.blocks.1.depthwise", 4 * 4 * 48 * 9, 48 * 9),
        ("net.blocks.1.project", 4 * 4 * 16 * 48, 16 * 48),
        # block 2, 16 -> 16, hidden 96, residual
        ("net.blocks.2.expand", 4 * 4 * 96 * 16, 96 * 16),
        ("net.blocks.2.depthwise", 4 * 4 * 96 * 9, 96 * 9),
        ("net.blocks.2.project", 4 * 4 * 16 * 96, 16 * 96),
        # block 3, 16 -> 24, hidden 96, stride 2: 4x4 -> 2x2
        ("net.blocks.3.expand", 4 * 4 * 96 * 16, 96 * 16),
        ("net.blocks.3.depthwise", 2 * 2 * 96 * 9, 96 * 9),
        ("net.blocks.3.project", 2 * 2 * 24 * 96, 24 * 96),
        # blocks 4 and 5, 24 -> 24, hidden 144, residual
        ("net.blocks.4.expand", 2 * 2 * 144 * 24, 144 * 24),
        ("net.blocks.4.depthwise", 2 * 2 * 144 * 9, 144 * 9),
        ("net.blocks.4.project", 2 * 2 * 24 * 144, 24 * 144),
        ("net.blocks.5.expand", 2 * 2 * 144 * 24, 144 * 24),
        ("net.blocks.5.depthwise", 2 * 2 * 144 * 9, 144 * 9),
        ("net.blocks.5.project", 2 * 2 * 24 * 144, 24 * 144),
        ("net.head", 2 * 2 * 64 * 24, 64 * 24),
        ("net.fc", 64 * 10, 64 * 10),
    ]


def test_macs_and_parameters_match_a_hand_computation(bench):
    model = bench.build_model()
    layers = profile_layers(model, bench.input_shape)
    expected = hand_computed_layers()
    assert [(l.name, l.macs, l.params) for l in layers] == expected
    assert sum(l.macs for l in layers) == sum(m for _, m, _ in expected) == 243_072
    # parameters: the weights above, BatchNorm's scale and shift per output channel of every conv but fc, fc's bias
    bn_channels = 16 + (16 + 8) + (48 + 48 + 16) + (96 + 96 + 16) + (96 + 96 + 24) + 2 * (144 + 144 + 24) + 64
    assert sum(p.numel() for p in model.parameters()) == sum(w for _, _, w in expected) + 2 * bn_channels + 10


def test_at_least_15_quantizable_layers_with_depthwise_ones(bench):
    model = bench.build_model()
    layers = profile_layers(model, bench.input_shape)
    assert len(layers) >= 15
    depthwise = [l.name for l in layers if l.depthwise]
    assert depthwise == [f"net.blocks.{i}.depthwise" for i in range(6)]
    for name in depthwise:
        conv = model.get_submodule(name)
        assert conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3)
    assert layers[0].name == "net.stem" and layers[-1].name == "net.fc"


def test_relu6_inside_blocks_and_linear_bottlenecks(bench):
    """Stem, expansion and depthwise outputs go through ReLU6 (the next conv reads values in [0, 6], reaching 6 when
    every BatchNorm scales by 100); the projection is linear (negative values reach the next block)."""
    torch.manual_seed(0)
    model = bench.build_model().eval()
    inputs = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0]))
        if isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 100.0)
    with torch.no_grad():
        model(torch.rand(8, *bench.input_shape))
    for i in range(6):
        for name in (f"net.blocks.{i}.depthwise", f"net.blocks.{i}.project"):
            assert inputs[name].min() >= 0 and inputs[name].max() == 6
        if i < 5:
            assert inputs[f"net.blocks.{i + 1}.expand"].min() < 0  # a linear bottleneck (plus a residual)


def test_ties_are_the_readers_of_each_residual_stream(bench):
    """Each tie group is a chain of layers whose inputs differ by exactly one residual add: the next reader's
    input is the previous reader's input plus that block's projection output (one stream, one format)."""
    torch.manual_seed(0)
    model = bench.build_model().eval()
    ties = bench.tied_layers(model)
    assert ties == [["net.blocks.2.expand", "net.blocks.3.expand"],
                    ["net.blocks.4.expand", "net.blocks.5.expand", "net.head"]]
    inputs, projections = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0]))
        if name.endswith("bn_project"):
            module.register_forward_hook(lambda m, i, o, name=name: projections.__setitem__(name, o))
    with torch.no_grad():
        model(torch.rand(4, *bench.input_shape))
    for group in ties:
        for reader, following in zip(group, group[1:]):
            block = reader.rsplit(".", 1)[0]
            assert torch.allclose(inputs[following], inputs[reader] + projections[f"{block}.bn_project"])
    # a block's input (read by its expansion, or its depthwise conv without one) is in a residual stream when
    # the block adds it to its output, or when the block before it did
    tied, previous = {n for group in ties for n in group}, None
    for i, block in enumerate(model.net.blocks):
        assert (f"net.blocks.{i}.{block.first}" in tied) == (block.residual or bool(previous and previous.residual))
        previous = block
    assert ("net.head" in tied) == previous.residual


def test_same_data_and_splits_as_digits(bench):
    ours, theirs = bench.splits(None), plugins.create("benchmark", "digits").splits(None)
    for a, b in ((ours.train, theirs.train), (ours.test, theirs.test)):
        assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))
    assert bench.radii == plugins.create("benchmark", "digits").radii
    assert bench.train_on_first_use and bench.architecture != "digits-resnet-v1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bench):
    """A briefly noise-trained model, so this file does not wait for the full base-model training."""
    from arqbench.models.training import train

    torch.manual_seed(0)
    model = bench.build_model()
    train(model, bench.splits(None).train, bench.recipe, 0.25, torch.device("cpu"), 0, epochs=2)
    path = tmp_path_factory.mktemp("mbv2") / "mbv2.pt"
    checkpoints.save(model, path, benchmark=bench.name, sigma=0.25)
    return path


def test_cli_run_with_uniform_and_hawq_respects_the_ties(cli, tmp_path, checkpoint):
    options = ["--option", "hawq.batches=1", "--option", "hawq.batch_size=64", "--option", "hawq.max_iter=3"]
    code, out, err = cli("run", "--benchmarks", "digits-mobilenetv2", "--methods", "uniform,hawq", "--sigma", "0.25",
                         "--budget", "0.03", "--out", tmp_path, "--checkpoint", checkpoint, *options, *TINY)
    assert code == 0, err
    results = {p.stem: json.loads(p.read_text()) for p in tmp_path.rglob("*.json")}
    assert set(results) == {"fp32-seed0", "uniform-seed0", "hawq-seed0"}
    assert all(r["status"] == "ok" for r in results.values())
    hawq = results["hawq-seed0"]
    assert hawq["cost"]["within_budget"] and hawq["search"]["ties"]
    for group in hawq["search"]["ties"]:
        assert len({tuple(hawq["policy"][n]) for n in group}) == 1
