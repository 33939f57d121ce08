"""Cohen et al.'s formats (locuslab/smoothing): their checkpoints compute in arqbench the function they compute
in their code, ResNet-110, their certification subset and their certify.py output."""

import json
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.models import checkpoints
from arqbench.models.base_model import base_model, load_checkpoint
from arqbench.models.benchmark import Splits
from arqbench.models.data import ProtocolData, permutation
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import fingerprint, prepare
from arqbench.pipeline.results import REFERENCE, Cell, read
from arqbench.quantization.layers import profile_layers
from arqbench.report import cohen
from arqbench.smoothing.core import ABSTAIN, Certificate
from arqbench.smoothing.metrics import summarize

# Cohen et al.'s constants, as published in code/datasets.py
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- Cohen et al.'s networks, written here from their description, independently of arqbench's ---------


class NormalizeLayer(nn.Module):
    """As Cohen's: the constants are plain tensors, not buffers, so the state_dict does not hold them."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means), torch.tensor(sds)

    def forward(self, x):
        return (x - self.means[None, :, None, None]) / self.sds[None, :, None, None]


class CohenBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + residual)


class CohenCifarResNet(nn.Module):
    """archs/cifar_resnet.py's ResNet(depth, num_classes=10) with basic blocks."""

    def __init__(self, depth):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        stages, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(CohenBlock(inplanes, planes, stride), *[CohenBlock(planes, planes)
                                                                              for _ in range(n - 1)]))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


def random_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics, as a trained network has."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            size = m.num_features
            m.weight.data = 0.5 + torch.rand(size, generator=gen)
            m.bias.data = 0.2 * torch.randn(size, generator=gen)
            m.running_mean = 0.2 * torch.randn(size, generator=gen)
            m.running_var = 0.5 + torch.rand(size, generator=gen)
    return net.eval()


# Cohen's get_architecture: Sequential(NormalizeLayer, model); the ImageNet model inside DataParallel
ARCHITECTURES = {
    "resnet20-cifar10": ("cifar_resnet20", lambda: CohenCifarResNet(20), (CIFAR10_MEAN, CIFAR10_STD), 2),
    "resnet110-cifar10": ("cifar_resnet110", lambda: CohenCifarResNet(110), (CIFAR10_MEAN, CIFAR10_STD), 1),
    "resnet50-imagenet": ("resnet50", lambda: nn.DataParallel(torchvision.models.resnet50()),
                          (IMAGENET_MEAN, IMAGENET_STD), 1),
    "mobilenetv2-imagenet": ("mobilenet_v2", lambda: nn.DataParallel(torchvision.models.mobilenet_v2()),
                             (IMAGENET_MEAN, IMAGENET_STD), 1),
}


def cohen_model(name: str) -> tuple[str, nn.Module, int]:
    arch, build, constants, images = ARCHITECTURES[name]
    torch.manual_seed(1)
    return arch, nn.Sequential(NormalizeLayer(*constants), random_batchnorm(build())).eval(), images


def save_cohen(path, arch: str, model: nn.Sequential):
    """train.py's checkpoint, in the legacy serialization of their PyTorch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 90, "arch": arch, "state_dict": model.state_dict(),
                "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}, path,
               _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_cohen_checkpoints_compute_their_original_function(name, tmp_path):
    arch, model, images = cohen_model(name)
    assert all(key.startswith("1.") for key in model.state_dict())  # nothing of NormalizeLayer in it
    bench = plugins.create("benchmark", name)
    side = bench.input_shape[-1]
    x = torch.rand((images, 3, side, side), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    given = save_cohen(tmp_path / "checkpoint.pth.tar", arch, model)
    sigma = 0.25
    released = tmp_path / "root" / "models" / bench.released / "noise_0.25" / "checkpoint.pth.tar"
    save_cohen(released, arch, model)
    routes = {"--checkpoint": dict(checkpoint=given), "models/ folder": dict(data_root=tmp_path / "root")}
    for route, where in routes.items():
        loaded, source = base_model(bench, sigma, None, torch.device("cpu"), **where)
        assert source["layout"] == "cohen" and source["arch"] == arch, route
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), expected, rtol=0, atol=1e-5, msg=route)
    if name.endswith("cifar10"):  # the network sees other inputs under CIFAR-10's true std: another function
        other, _ = base_model(bench, sigma, None, torch.device("cpu"), checkpoint=given, normalization="cifar10")
        with torch.no_grad():
            assert (other(x) - expected).abs().max() > 1e-2


def test_plain_cifar_state_dict_is_refused_naming_the_normalisations(tmp_path, cli):
    bench = plugins.create("benchmark", "resnet20-cifar10")
    path = tmp_path / "plain.pth"
    torch.save(bench.build_model().net.state_dict(), path)
    with pytest.raises(ArqbenchError) as error:
        load_checkpoint(bench, bench.build_model(), path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "--normalization cohen" in message
    assert "0.2023" in message and "cifar10 (" in message and "MEAN" in message
    model = bench.build_model()
    assert load_checkpoint(bench, model, path, "cohen")["normalization"]["from"] == "--normalization cohen"
    assert model.normalization.std == tuple(CIFAR10_STD)
    load_checkpoint(bench, model, path, "0.5,0.5,0.5/0.25,0.25,0.25")
    assert model.normalization == ((0.5,) * 3, (0.25,) * 3)
    for bad in ("0.5,0.5/0.25", "cohen2", "0.5,0.5,0.5/0,1,1"):
        with pytest.raises(ArqbenchError, match="--normalization"):
            load_checkpoint(bench, bench.build_model(), path, bad)
    write_cifar_test(tmp_path / "data")
    code, _, err = cli("certify", "--benchmark", "resnet20-cifar10", "--data-root", tmp_path / "data",
                       "--checkpoint", path, "--n", "10", "--test-images", "1")
    assert code == 2 and err.count("\n") == 1 and "--normalization cohen" in err


def test_arqbench_checkpoints_record_and_restore_their_normalisation(tmp_path):
    bench = plugins.create("benchmark", "resnet20-cifar10")
    model = bench.build_model().eval()
    model.normalize_with(bench.normalizations["cohen"])
    checkpoints.save(model, tmp_path / "own.pt", benchmark=bench.name)
    again = bench.build_model().eval()
    assert again.normalization == bench.normalizations["cifar10"]  # what arqbench trains with
    source = load_checkpoint(bench, again, tmp_path / "own.pt")
    assert again.normalization == bench.normalizations["cohen"] and source["normalization"]["from"].startswith("rec")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert fingerprint(again) == fingerprint(model) != fingerprint(bench.build_model())
    # a whole Normalized's state_dict carries its constants as buffers
    torch.save(model.state_dict(), tmp_path / "wrapper.pth")
    third = bench.build_model()
    assert load_checkpoint(bench, third, tmp_path / "wrapper.pth")["normalization"]["from"].startswith("rec")
    assert third.normalization == bench.normalizations["cohen"]
    # arqbench checkpoints from before the record were trained with the built-in normalisation
    legacy = torch.load(tmp_path / "own.pt", weights_only=True)
    del legacy["normalization"]
    torch.save(legacy, tmp_path / "legacy.pt")
    fourth = bench.build_model()
    assert load_checkpoint(bench, fourth, tmp_path / "legacy.pt")["normalization"]["from"] == "arqbench's built-in"
    assert fourth.normalization == bench.normalizations["cifar10"]


# --- ResNet-110 ---------------------------------------------------------------------------------------


def test_resnet110_macs_parameters_and_tied_shortcuts(cli):
    """MACs (conv + fc, 32x32) by hand, 18 blocks per stage: stem 442,368; layer1 36 convs x 2,359,296;
    layer2 and layer3 each 1,179,648 (strided first conv) + 35 x 2,359,296 + a 1x1 projection of 131,072;
    fc 640 -> 253,149,824. Parameters: Cohen et al.'s 1.73M."""
    bench = plugins.create("benchmark", "resnet110-cifar10")
    model = bench.build_model()
    layers = profile_layers(model, bench.input_shape)
    assert sum(l.macs for l in layers) == 442_368 + 36 * 2_359_296 + 2 * (1_179_648 + 35 * 2_359_296 + 131_072) + 640
    assert sum(p.numel() for p in model.parameters()) == 1_730_714
    assert len(layers) == 112 and bench.architecture == "cifar_resnet110"
    assert bench.tied_layers(model) == [["net.layer2.0.downsample.0", "net.layer2.0.conv1"],
                                        ["net.layer3.0.downsample.0", "net.layer3.0.conv1"]]
    code, out, _ = cli("list")
    assert code == 0 and "resnet110-cifar10" in out


# --- the certification subset ----------------------------------------------------------------------------


def test_cohen_subsets_are_every_kth_test_image_from_the_first():
    test = torch.utils.data.TensorDataset(torch.zeros(50_000, 1))
    for subset, skip, size in (("cohen", 20, 10_000), ("cohen-imagenet", 100, 50_000)):
        data = ProtocolData.from_splits(Splits(None, torch.utils.data.Subset(test, range(size))), 500, 100, subset)
        assert data.certify.indices == list(range(0, size, skip))[:500] and len(data.certify) == 500
        held = set(data.certify.indices)
        assert not held & set(data.search.indices) and not held & set(data.finetune.indices)  # no train split
    random = ProtocolData.from_splits(Splits(None, test), 500, 100)
    assert random.certify.indices == permutation(50_000)[:500]  # the default is unchanged
    with pytest.raises(ArqbenchError, match="--subset must be one of random, cohen, cohen-imagenet"):
        resolve(plugins.create("benchmark", "digits"), {"subset": "every20"})


def test_subset_is_recorded_and_part_of_what_makes_a_cell_reusable(cli, tmp_path):
    tiny = ["--methods", "uniform", "--n0", "10", "--n", "50", "--test-images", "3", "--batch-size", "50",
            "--finetune-epochs", "0", "--out", tmp_path]
    code, _, err = cli("run", "--subset", "cohen", *tiny)
    assert code == 0, err
    fp32 = read(tmp_path / "digits" / "sigma0.25" / "fp32-seed0.json")
    assert fp32["config"]["protocol"]["subset"] == "cohen"
    assert [c["index"] for c in fp32["certificates"]] == [0, 20, 40]
    code, _, err = cli("run", *tiny)
    assert code == 2 and "other settings" in err
    # result files from before the setting existed were made with the random subset
    path = tmp_path / "digits" / "sigma0.25" / "fp32-seed0.json"
    record = json.loads(path.read_text())
    del record["config"]["protocol"]["subset"]
    path.write_text(json.dumps(record))
    assert read(path)["config"]["protocol"]["subset"] == "random"


# --- certify.py's output ---------------------------------------------------------------------------------


def test_cohen_output_lines_have_their_exact_format():
    certs = [Certificate(0, 3, 3, 0.61234, 0.9, 90, 100, 1.5), Certificate(20, 7, ABSTAIN, 0.0, 0.4, 40, 100, 0.25),
             Certificate(40, 1, 2, 1.0, 0.99, 99, 100, 61.000001), Certificate(60, 5, 5, 0.0123456, 0.5, 51, 100, 0)]
    assert cohen.text(certs).splitlines() == [
        "idx\tlabel\tpredict\tradius\tcorrect\ttime",
        "0\t3\t3\t0.612\t1\t0:00:01.500000",
        "20\t7\t-1\t0.0\t0\t0:00:00.250000",
        "40\t1\t2\t1.0\t0\t0:01:01.000001",
        "60\t5\t5\t0.0123\t1\t0:00:00",
    ]


def analyze(path, radii):
    """What Cohen et al.'s analyze.py does with a certify.py file (ApproximateAccuracy.at_radii)."""
    df = pd.read_csv(path, delimiter="\t")
    return np.array([(df["correct"] & (df["radius"] >= radius)).mean() for radius in radii])


def test_certify_writes_a_file_cohens_analysis_reads(cli, tmp_path):
    out = tmp_path / "sigma_0.25"
    code, _, err = cli("certify", "--subset", "cohen", "--test-images", "6", "--n0", "20", "--n", "300",
                       "--batch-size", "300", "--cohen-out", out)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime" and len(lines) == 7
    for line in lines[1:]:
        assert re.fullmatch(r"\d+\t\d\t-?\d\t[0-9.e+-]+\t[01]\t\d+:\d\d:\d\d(\.\d{6})?", line), line
    df = pd.read_csv(out, delimiter="\t")
    assert list(df["idx"]) == [0, 20, 40, 60, 80, 100]
    digits = plugins.create("benchmark", "digits")
    protocol = resolve(digits, {"subset": "cohen", "test_images": 6, "n0": 20, "n": 300, "batch_size": 300})
    prepared = prepare(digits, 0.25, protocol, torch.device("cpu"))
    certs, *_ = CellRun(Cell("digits", 0.25, None, REFERENCE, 0), prepared, protocol,
                       torch.device("cpu")).certify(prepared.model)
    assert list(df["label"]) == [int(prepared.data.test[i][1]) for i in range(0, 101, 20)]
    assert list(df["predict"]) == [c.prediction for c in certs]
    assert list(df["correct"]) == [int(c.correct) for c in certs]
    assert np.allclose(df["radius"], [c.radius for c in certs], rtol=5e-3, atol=0)
    radii = [0.0, 0.1, 0.2, 0.3]
    expected = summarize(certs, radii)["certified_acc"]
    assert list(analyze(out, radii)) == [expected[f"{r:g}"] for r in radii]
    code, _, err = cli("certify", "--certifiers", "irs,rs", "--cohen-out", out)
    assert code == 2 and "--cohen-out" in err and err.count("\n") == 1


def write_cifar_test(root, n=2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [0, 1][:n]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
