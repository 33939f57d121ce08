"""The fine-tune's remedies (``arqbench.models.finetune_recipe``): BatchNorm recalibration and freeze, the lr
scale, cross-layer equalization; each checked against what it must compute, and the default is today's recipe."""

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from arqbench.errors import ArqbenchError
from arqbench.models import batchnorm
from arqbench.models.data import noisy_batches
from arqbench.models.finetune_recipe import DEFAULT, FinetuneRecipe
from arqbench.models.training import finetune, train
from arqbench.quantization.equalization import equalize, ranges
from conftest import PUBLISHED_02
from test_training import CPU, RECIPE, Net, data, state


def test_recalibration_sets_running_stats_to_the_averages_of_the_batch_statistics_over_the_pass():
    model = Net()
    model.bn.running_mean.fill_(5.0)  # stale statistics, to be replaced
    seen = []
    model.bn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 6, generator=generator) for n in (16, 16, 16)]
    batchnorm.recalibrate(model, batches)
    assert torch.allclose(model.bn.running_mean, torch.stack([x.mean(0) for x in seen]).mean(0), atol=1e-6)
    assert torch.allclose(model.bn.running_var, torch.stack([x.var(0) for x in seen]).mean(0), atol=1e-6)
    assert model.bn.momentum == 0.1 and not model.training and not model.bn.training


def test_frozen_batchnorm_stops_its_running_stats_at_the_set_step_while_training_goes_on():
    start = Net()
    first_three, frozen_after_three = copy.deepcopy(start), copy.deepcopy(start)
    train(first_three, data(), RECIPE, 0.25, CPU, seed=3, steps=3)
    train(frozen_after_three, data(), RECIPE, 0.25, CPU, seed=3, steps=7, bn_freeze_step=3)
    assert not torch.equal(first_three.bn.running_mean, start.bn.running_mean)  # they did update for 3 steps
    assert torch.equal(frozen_after_three.bn.running_mean, first_three.bn.running_mean)
    assert torch.equal(frozen_after_three.bn.running_var, first_three.bn.running_var)
    assert not torch.equal(frozen_after_three.fc.weight, first_three.fc.weight)


def test_bn_freeze_is_a_fraction_of_the_finetunes_steps():
    tuned, reference = Net(), Net()
    finetune(tuned, data(), RECIPE, 0.25, CPU, seed=3, tuning=FinetuneRecipe(bn_freeze=0.5), steps=6)
    train(reference, data(), RECIPE, 0.25, CPU, seed=3, steps=6, bn_freeze_step=3)
    for name, value in state(reference).items():
        assert torch.equal(value, tuned.state_dict()[name]), name


def test_lr_scale_multiplies_the_recipes_learning_rate():
    tuned, reference = Net(), Net()
    finetune(tuned, data(), RECIPE, 0.25, CPU, seed=3, tuning=FinetuneRecipe(lr_scale=0.1), steps=4)
    train(reference, data(), dataclasses.replace(RECIPE, lr=RECIPE.lr * 0.1), 0.25, CPU, seed=3, steps=4)
    for name, value in state(reference).items():
        assert torch.equal(value, tuned.state_dict()[name]), name


def test_bn_recalibrate_reestimates_before_and_after_the_finetune():
    tuned, reference = Net(), Net()
    finetune(tuned, data(), RECIPE, 0.25, CPU, seed=3, tuning=FinetuneRecipe(bn_recalibrate=True), steps=4)
    pass_ = lambda: noisy_batches(data(), 0.25, 4, RECIPE.batch_size, CPU, 3)  # 64 images: 4 batches of 16
    batchnorm.recalibrate(reference, pass_())
    train(reference, data(), RECIPE, 0.25, CPU, seed=3, steps=4)
    assert not torch.equal(reference.bn.running_mean, tuned.bn.running_mean)  # not yet recalibrated after
    batchnorm.recalibrate(reference, pass_())
    for name, value in state(reference).items():
        assert torch.equal(value, tuned.state_dict()[name]), name


def test_the_default_recipe_is_todays_finetune_and_bad_fields_are_one_clear_error():
    assert FinetuneRecipe.parse(None) == FinetuneRecipe() and DEFAULT == FinetuneRecipe().as_dict()
    with pytest.raises(ArqbenchError, match="unknown fine-tune recipe field"):
        FinetuneRecipe.parse({"bn_frozen": 1})
    with pytest.raises(ArqbenchError, match="bn_freeze must be a fraction"):
        FinetuneRecipe.parse({"bn_freeze": 2})
    with pytest.raises(ArqbenchError, match="equalize must be one of"):
        FinetuneRecipe.parse({"equalize": "yes"})


class Chain(nn.Module):
    """conv -> BN -> act -> depthwise conv -> BN -> act -> conv -> BN -> act -> conv, and a residual tail whose
    input is read twice (not an equalizable pair)."""

    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.act = act
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.c, self.bn_c = nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.d = nn.Conv2d(6, 6, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # ranges that differ a lot across channels
                module.weight.data *= torch.logspace(-1, 1, module.weight.shape[0]).view(-1, 1, 1, 1)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.2, 3)
                module.weight.data.uniform_(0.2, 3), module.bias.data.uniform_(-1, 1)

    def forward(self, x):
        x = self.c(self.act(self.bn_b(self.b(self.act(self.bn_a(self.a(x)))))))
        x = self.act(self.bn_c(x))
        return x + self.d(x)


def test_equalization_keeps_a_relu_networks_function_and_equalizes_each_pairs_ranges():
    model = Chain(F.relu).eval()
    equalized, pairs = equalize(model)
    assert [(p.first, p.batchnorm, p.second) for p in pairs] == [("a", "bn_a", "b"), ("b", "bn_b", "c")]
    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(equalized(x), model(x), atol=1e-5)
    for pair in pairs:
        r1, r2 = ranges(equalized, pair)
        assert torch.allclose(r1, r2, rtol=1e-4)
        before1, before2 = ranges(model, pair)
        assert (before1 / before2).log().abs().max() > 1  # there was something to equalize
    assert torch.equal(model.d.weight, equalized.d.weight)  # the residual's input is not rescaled


def test_equalization_leaves_relu6_pairs_alone_unless_told_to_treat_relu6_as_relu():
    model = Chain(F.relu6).eval()
    untouched, pairs = equalize(model)
    assert pairs == [] and all(torch.equal(v, untouched.state_dict()[k]) for k, v in model.state_dict().items())
    equalized, pairs = equalize(model, relu6_as_relu=True)
    assert len(pairs) == 2
    as_relu = copy.deepcopy(model)
    as_relu.act = F.relu
    x = 4 * torch.randn(4, 3, 6, 6)
    assert torch.allclose(equalized(x), as_relu(x), atol=1e-4)
    assert not torch.allclose(model(x), as_relu(x), atol=1e-3)  # the change it makes to the float model
    assert [name for name, _ in equalized.named_modules() if name] [:2] == ["a", "bn_a"]  # names kept


def test_published_results_read_as_made_under_the_default_recipe_and_still_match_their_protocol():
    from arqbench.pipeline.cell import config_record
    from arqbench.pipeline.config import create_benchmark, known_settings, resolve
    from arqbench.pipeline.results import Cell, read

    folder = PUBLISHED_02 / "digits-mobilenetv2/sigma0.25"
    quantized, reference = read(folder / "budget0.0075/arq-seed0.json"), read(folder / "fp32-seed0.json")
    assert "finetune_recipe" not in reference["config"]["protocol"]
    assert quantized["config"]["protocol"]["finetune_recipe"] == DEFAULT
    protocol = resolve(create_benchmark("digits-mobilenetv2"), known_settings(quantized["config"]["protocol"]))
    cell = Cell(quantized["benchmark"], quantized["sigma"], quantized["budget"], quantized["method"], quantized["seed"])
    assert protocol.tuning() == FinetuneRecipe()
    record = config_record(cell, protocol)["protocol"]
    # the one difference is the candidate fine-tune the benchmark has defaulted to since 0.4 (a re-run recomputes)
    assert record["options"].pop("arq") == {"finetune_steps": "final"}
    assert record == quantized["config"]["protocol"]


def test_the_finetune_recipe_flag_changes_the_fields_it_names_over_the_benchmarks_recipe(tmp_path):
    from arqbench.models.finetune_recipe import fields_from_text
    from arqbench.pipeline.config import create_benchmark, resolve
    from arqbench.pipeline.usecases import record, run_settings

    assert fields_from_text("bn_freeze=0, lr_scale=0.5") == {"bn_freeze": 0.0, "lr_scale": 0.5}
    assert fields_from_text("bn_freeze=none,bn_recalibrate=TRUE,equalize=exact") == {
        "bn_freeze": None, "bn_recalibrate": True, "equalize": "exact"}
    for text, message in [("bn_freeze", "KEY=VALUE"), ("bn_frozen=1", "unknown field 'bn_frozen'"),
                          ("bn_freeze=x", "bn_freeze expects a fraction or none"),
                          ("bn_recalibrate=1", "expects true or false"), ("bn_freeze=2", "--finetune-recipe: .*fraction"),
                          ("equalize=yes", "--finetune-recipe: .*equalize must be one of")]:
        with pytest.raises(ArqbenchError, match=message):
            fields_from_text(text)
    benchmark = create_benchmark("digits")
    benchmark = dataclasses.replace(benchmark, defaults={**benchmark.defaults, "finetune_recipe": {"bn_freeze": 0.0}})
    assert resolve(benchmark, {}).tuning() == FinetuneRecipe(bn_freeze=0.0)  # a benchmark's own default
    assert resolve(benchmark, {"finetune_recipe": "lr_scale=0.5"}).tuning() == FinetuneRecipe(bn_freeze=0.0, lr_scale=0.5)
    assert resolve(benchmark, {"finetune_recipe": "bn_freeze=none"}).tuning() == FinetuneRecipe()
    assert resolve(benchmark, {"finetune_recipe": dict(DEFAULT)}).tuning() == FinetuneRecipe()  # a recorded one
    settings = run_settings(None, {"finetune_recipe": "bn_freeze=0.5", "out": tmp_path}, "run")
    assert record(settings)["finetune-recipe"] == "bn_freeze=0.5"
    recorded = {key: value for key, value in record(settings).items() if value is not None}
    assert run_settings(None, recorded, "run").finetune_recipe == "bn_freeze=0.5"  # a sweep file round-trips
