"""The paper's benchmarks (resnet20-cifar10, resnet50-imagenet, mobilenetv2-imagenet) on tiny fixtures written in
the real on-disk formats: CIFAR-10 python pickles, an ImageNet ImageFolder, Cohen et al.'s checkpoint layout."""

import json
import pickle

import numpy as np
import pytest
import torch
from arqbench.bundled.benchmarks.cifar import CifarResNet
from PIL import Image
from torch import nn

from arqbench import plugins
from arqbench.errors import ArqbenchError, SkipBenchmark
from arqbench.models import checkpoints
from arqbench.models.base_model import base_model
from arqbench.models.data import ProtocolData
from arqbench.quantization.layers import profile_layers

PAPER = ("resnet20-cifar10", "resnet50-imagenet", "mobilenetv2-imagenet")
WNIDS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}  # first, second and last of the 1000
TINY_RUN = ["--methods", "uniform", "--n0", "4", "--n", "8", "--test-images", "2", "--batch-size", "8",
            "--finetune-epochs", "0"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the ImageNet forwards stay fast on a small CPU that other jobs share (spinning
    OpenMP threads on an oversubscribed 2-core machine made them 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def benchmark(name):
    return plugins.create("benchmark", name)


def write_cifar(root, train_per_batch=4, test=6):
    """The official layout: data_batch_1..5 and test_batch, pickles of {b"data": uint8 N x 3072, b"labels": [...]}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", train_per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        entry = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)], b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return folder


def write_imagenet(val, per_class=1, size=64):
    """An ImageFolder of small JPEG and PNG files in real wnid folders."""
    rng = np.random.default_rng(1)
    for c, wnid in enumerate(WNIDS):
        (val / wnid).mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            image.save(val / wnid / (f"img{i}.JPEG" if c % 2 == 0 else f"img{i}.png"))


def cohen_checkpoint(path, net: nn.Module, arch: str, prefix: str):
    """Cohen et al.'s train.py output: Sequential(NormalizeLayer (no parameters), model).state_dict() and the
    SGD state (momentum buffers), in the legacy (pre-zip) serialization of the PyTorch of their day."""
    state = {prefix + key: value for key, value in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # zero gradients: creates the momentum buffers, leaves the weights as they are
    torch.save({"epoch": 90, "arch": arch, "state_dict": state, "optimizer": optimizer.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root)
    write_imagenet(root / "imagenet" / "val")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Randomly initialised checkpoints of each paper model: {benchmark: (path, network)}."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    nets = {name: benchmark(name).build_model().net for name in PAPER}
    torch.save(nets["mobilenetv2-imagenet"].state_dict(), folder / "mbv2.pth")  # a plain torchvision state_dict
    paths = {
        "resnet20-cifar10": cohen_checkpoint(folder / "c20.pth.tar", nets["resnet20-cifar10"], "cifar_resnet20", "1."),
        "resnet50-imagenet": cohen_checkpoint(folder / "r50.pth.tar", nets["resnet50-imagenet"], "resnet50",
                                              "1.module."),
        "mobilenetv2-imagenet": folder / "mbv2.pth",
    }
    return {name: (paths[name], nets[name]) for name in PAPER}


# --- data -----------------------------------------------------------------------------------------------


def test_cifar_reader_gives_images_in_unit_range_with_their_labels(data_root):
    splits = benchmark("resnet20-cifar10").splits(data_root)
    assert len(splits.train) == 20 and len(splits.test) == 6
    with open(data_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle)
    x, y = splits.test[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, torch.tensor(raw[b"data"][3]).view(3, 32, 32).float() / 255)  # channel-major rows
    assert y == raw[b"labels"][3]
    plain, (augmented, label) = splits.train_eval[5], splits.train[5]
    assert augmented.shape == (3, 32, 32) and label == plain[1] and 0 <= augmented.min() <= augmented.max() <= 1
    data = ProtocolData.from_splits(splits, test_images=2, search_images=500)
    assert data.search.dataset is splits.train_eval and data.finetune.dataset is splits.train  # search split not augmented
    assert len(data.search) == 4 and len(data.certify) == 2


def test_cifar_augmentation_is_crop_and_flip_of_the_image(data_root):
    splits = benchmark("resnet20-cifar10").splits(data_root)
    torch.manual_seed(0)
    plain = splits.train_eval[0][0]
    crops = [splits.train[0][0] for _ in range(20)]
    assert any(not torch.equal(c, plain) for c in crops)
    padded = nn.functional.pad(plain, (4, 4, 4, 4))
    windows = [padded[:, t:t + 32, l:l + 32] for t in range(9) for l in range(9)]
    assert all(any(torch.equal(c, w) or torch.equal(c, w.flip(-1)) for w in windows) for c in crops)


def test_cifar_reader_reads_python2_era_pickles_and_refuses_code(tmp_path):
    folder = write_cifar(tmp_path, train_per_batch=1, test=2)
    batch = folder / "test_batch"
    expected = benchmark("resnet20-cifar10").splits(tmp_path).test[1][0]
    batch.write_bytes(batch.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))  # numpy 1.x
    assert torch.equal(benchmark("resnet20-cifar10").splits(tmp_path).test[1][0], expected)
    batch.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(SkipBenchmark, match="refusing to load"):
        benchmark("resnet20-cifar10").splits(tmp_path)


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("damage", ["missing", "garbage", "shape"])
def test_malformed_cifar_skips_with_one_line_naming_the_path(tmp_path, damage):
    folder = write_cifar(tmp_path, train_per_batch=1, test=1)
    target = folder / "data_batch_3"
    if damage == "missing":
        target.unlink()
    elif damage == "garbage":
        target.write_bytes(target.read_bytes()[:40])
    else:
        target.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(SkipBenchmark) as error:
        benchmark("resnet20-cifar10").splits(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(target) in message and message.startswith("resnet20-cifar10: ")


def test_imagenet_folder_maps_wnids_to_their_true_indices(data_root):
    splits = benchmark("resnet50-imagenet").splits(data_root)
    assert splits.train is None and splits.train_eval is None  # no train/ folder: the core uses val images
    assert splits.test.class_to_idx == WNIDS
    assert [(path.rsplit("/", 2)[-2], y) for path, y in splits.test.samples] == list(WNIDS.items())
    assert splits.test.samples[1][0].endswith(".png")
    x, y = splits.test[2]
    assert x.shape == (3, 224, 224) and 0 <= x.min() <= x.max() <= 1 and y == 999


def test_imagenet_accepts_val_directly_under_the_root_and_an_optional_train_folder(tmp_path):
    write_imagenet(tmp_path / "val")
    write_imagenet(tmp_path / "train", per_class=2, size=40)
    splits = benchmark("mobilenetv2-imagenet").splits(tmp_path)
    assert len(splits.test) == 3 and len(splits.train) == 6
    assert splits.train.class_to_idx == WNIDS and splits.train_eval.samples == splits.train.samples
    assert splits.train[0][0].shape == splits.train_eval[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("layout", ["no val", "not a wnid", "empty class"])
def test_malformed_imagenet_skips_with_one_line(tmp_path, layout):
    if layout == "not a wnid":
        write_imagenet(tmp_path / "imagenet" / "val")
        (tmp_path / "imagenet" / "val" / "cats").mkdir()
    elif layout == "empty class":
        (tmp_path / "imagenet" / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(SkipBenchmark) as error:
        benchmark("resnet50-imagenet").splits(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and message.startswith("resnet50-imagenet: ")
    assert layout != "not a wnid" or "'cats'" in message


@pytest.mark.parametrize("name", PAPER)
def test_without_data_root_each_paper_benchmark_says_how_to_provide_it(name):
    with pytest.raises(SkipBenchmark) as error:
        benchmark(name).splits(None)
    assert "\n" not in str(error.value) and "--data-root" in str(error.value) and "ARQBENCH_DATA" in str(error.value)


# --- checkpoints ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER)
def test_checkpoints_load_in_each_layout(name, weights):
    path, net = weights[name]
    model = benchmark(name).build_model()
    source = checkpoints.load_into(model, path, benchmark(name).architecture)
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), net.state_dict().values()))
    assert source["arch"] == {"resnet20-cifar10": "cifar_resnet20", "resnet50-imagenet": "resnet50"}.get(name)


def test_arqbench_checkpoint_round_trips(tmp_path, weights):
    model = benchmark("resnet20-cifar10").build_model()
    checkpoints.load_into(model, weights["resnet20-cifar10"][0])
    checkpoints.save(model, tmp_path / "own.pt", benchmark="resnet20-cifar10", sigma=0.25)
    again = benchmark("resnet20-cifar10").build_model()
    checkpoints.load_into(again, tmp_path / "own.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_wrong_architecture_and_truncated_checkpoints_are_one_line_errors(tmp_path, weights):
    cifar = benchmark("resnet20-cifar10")
    with pytest.raises(ArqbenchError, match="does not fit cifar_resnet20.*checkpoint arch 'resnet50'|"
                                            "checkpoint arch 'resnet50'.*does not fit cifar_resnet20"):
        checkpoints.load_into(cifar.build_model(), weights["resnet50-imagenet"][0], cifar.architecture)
    hundred = cohen_checkpoint(tmp_path / "c100.pth.tar", CifarResNet(3, num_classes=100), "cifar_resnet20",
                               "1.")  # same keys, other shapes
    with pytest.raises(ArqbenchError, match="does not fit"):
        checkpoints.load_into(cifar.build_model(), hundred, cifar.architecture)
    for source in (weights["resnet20-cifar10"][0], weights["mobilenetv2-imagenet"][0]):  # legacy and zip format
        truncated = tmp_path / f"truncated-{source.name}"
        truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        with pytest.raises(ArqbenchError, match="corrupt") as error:
            checkpoints.load_into(cifar.build_model(), truncated)
        assert "\n" not in str(error.value)


def test_conventional_checkpoint_paths_are_found(tmp_path, weights):
    cifar = benchmark("resnet20-cifar10")
    ours, released = cifar.checkpoint_paths(0.25, tmp_path)
    assert ours == tmp_path / "checkpoints" / "resnet20-cifar10" / "noise_0.25" / "checkpoint.pth.tar"
    assert released == tmp_path / "models" / "cifar10" / "resnet20" / "noise_0.25" / "checkpoint.pth.tar"
    assert cifar.checkpoint_paths(0.5, tmp_path)[0].parent.name == "noise_0.50"  # Cohen's folder names
    assert cifar.checkpoint_paths(0.25, None) == []
    released.parent.mkdir(parents=True)
    released.write_bytes(weights["resnet20-cifar10"][0].read_bytes())
    model, source = base_model(cifar, 0.25, None, torch.device("cpu"), data_root=tmp_path)
    assert source["path"] == str(released) and not model.training
    ours.parent.mkdir(parents=True)
    ours.write_bytes(weights["resnet20-cifar10"][0].read_bytes())
    assert base_model(cifar, 0.25, None, torch.device("cpu"), data_root=tmp_path)[1]["path"] == str(ours)


# --- models ---------------------------------------------------------------------------------------------


def test_resnet20_macs_parameters_and_tied_shortcuts():
    """MACs (conv + fc, 32x32) derived by hand: stem 32*32*16*27 = 442,368; layer1 6 * 1024*16*16*9; layer2 and
    layer3 each 1,179,648 (first conv) + 5 * 2,359,296 + a 1x1 projection of 131,072; fc 640 -> 40,813,184.
    Option A shortcuts (no projections) give the 40.55M usually quoted for ResNet-20; option B adds 0.26M."""
    cifar = benchmark("resnet20-cifar10")
    model = cifar.build_model()
    layers = profile_layers(model, cifar.input_shape)
    assert sum(l.macs for l in layers) == 40_813_184
    assert abs(sum(l.macs for l in layers) - 40.6e6) / 40.6e6 < 0.01
    assert sum(p.numel() for p in model.parameters()) == 272_474
    assert len(layers) == 22 and layers[0].name == "net.conv1" and layers[-1].name == "net.fc"
    ties = cifar.tied_layers(model)
    assert ties == [["net.layer2.0.downsample.0", "net.layer2.0.conv1"],
                    ["net.layer3.0.downsample.0", "net.layer3.0.conv1"]]
    assert {n for tie in ties for n in tie} <= {l.name for l in layers}


@pytest.mark.parametrize("name, published, ties", [("resnet50-imagenet", "ResNet50_Weights", 4),
                                                   ("mobilenetv2-imagenet", "MobileNet_V2_Weights", 0)])
def test_imagenet_macs_match_torchvision_published_ops(name, published, ties):
    """torchvision documents 4.089 GFLOPS (ResNet-50) and 0.301 (MobileNetV2), counted as multiply-adds."""
    import torchvision

    expected = getattr(torchvision.models, published).IMAGENET1K_V1.meta["_ops"] * 1e9
    bench = benchmark(name)
    model = bench.build_model()
    layers = profile_layers(model, bench.input_shape)
    assert abs(sum(l.macs for l in layers) - expected) / expected < 0.01
    assert len(bench.tied_layers(model)) == ties
    assert {n for tie in bench.tied_layers(model) for n in tie} <= {l.name for l in layers}


# --- the CLI --------------------------------------------------------------------------------------------


def test_list_shows_the_four_benchmarks(cli):
    code, out, _ = cli("list")
    assert code == 0 and all(name in out for name in ("digits",) + PAPER)


@pytest.mark.parametrize("name", PAPER)
def test_run_cell_on_fixtures(cli, tmp_path, data_root, weights, name, monkeypatch):
    if name == "resnet20-cifar10":  # the data root from the environment, and a DataLoader worker process
        monkeypatch.setenv("ARQBENCH_DATA", str(data_root))
        place = ["--workers", "1"]
    else:
        place = ["--data-root", data_root]
    code, _, err = cli("run", "--benchmarks", name, *place, "--checkpoint", weights[name][0], "--out", tmp_path,
                       *TINY_RUN)
    assert code == 0, err
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("*.json"))]
    assert {r["method"] for r in results} == {"fp32", "uniform"} and all(r["status"] == "ok" for r in results)
    assert all(len(r["certificates"]) == 2 for r in results)
    assert results[0]["base_model"]["path"] == str(weights[name][0])


def test_without_data_paper_benchmarks_skip_while_digits_runs(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("ARQBENCH_DATA", raising=False)
    code, _, err = cli("run", "--benchmarks", ",".join(("digits",) + PAPER), "--out", tmp_path, *TINY_RUN)
    assert code == 0, err
    text = " ".join(err.split())
    for name in PAPER:
        assert f"skipped: {name}: no data root" in text
    assert text.count("skipped:") == 3
    assert {p.parent.name for p in tmp_path.rglob("*.json")} >= {"sigma0.25", "budget0.025"}
    assert {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*.json")} == {"digits"}


def test_negative_workers_is_refused(cli):
    code, _, err = cli("train", "--benchmark", "resnet20-cifar10", "--workers", "-1")
    assert code == 2 and "--workers" in err
