"""Dataset loaders (on files we write), subsets, the batch iterator and batched augmentation."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from dualoptim.errors import ConfigError, DataNotFoundError
from dualoptim.vision.data import (
    DEBIAN_FASHION_MNIST,
    ENV_DATA_DIR,
    TensorLoader,
    get_dataset_info,
    list_datasets,
    load_dataset,
    make_augment,
    random_crop,
    random_flip,
    stratified_subset,
)


def write_idx(path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fashion(folder, n_train=50, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": n_train, "t10k": n_test}
    for split, n in parts.items():
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return folder


def test_registry_lists_the_issue_datasets():
    assert {"fashion-mnist", "digits", "cifar10", "cifar100", "svhn", "tinyimagenet"} <= set(list_datasets())
    with pytest.raises(ConfigError, match="valid: .*fashion-mnist"):
        get_dataset_info("mnist-typo")


def test_digits_shapes_and_normalization(digits):
    assert digits.train_x.shape == (1347, 1, 8, 8) and digits.test_x.shape == (450, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert abs(digits.train_x.mean().item()) < 1e-4 and abs(digits.train_x.std().item() - 1) < 1e-3
    assert sorted(torch.unique(digits.train_y).tolist()) == list(range(10))
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == 8


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    make_fashion(tmp_path / "fm", gz=gz)
    d = load_dataset("fashion-mnist", data_dir=tmp_path / "fm")
    assert d.train_x.shape == (50, 1, 28, 28) and d.test_x.shape == (20, 1, 28, 28)
    assert d.train_y.tolist() == [i % 10 for i in range(50)]


def test_fashion_mnist_from_env_and_subfolder(tmp_path, monkeypatch):
    make_fashion(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "root"))
    assert load_dataset("fashion-mnist").num_train == 50


def test_missing_data_lists_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("dualoptim.vision.data.DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and ENV_DATA_DIR in msg and "torchvision" in msg
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nope")
    for name in ("cifar10", "cifar100", "svhn", "tinyimagenet"):
        with pytest.raises(DataNotFoundError, match=ENV_DATA_DIR):
            load_dataset(name, data_dir=tmp_path)


def test_truncated_idx_is_rejected(tmp_path):
    folder = make_fashion(tmp_path / "fm", gz=False)
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(ConfigError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_cifar10_binary_and_python(tmp_path):
    rng = np.random.default_rng(0)
    bin_dir = tmp_path / "a" / "cifar-10-batches-bin"
    bin_dir.mkdir(parents=True)
    for name, n in [*[(f"data_batch_{i}.bin", 4) for i in range(1, 6)], ("test_batch.bin", 3)]:
        rec = np.concatenate([np.full((n, 1), 7), rng.integers(0, 256, (n, 3072))], 1).astype(np.uint8)
        rec.tofile(bin_dir / name)
    d = load_dataset("cifar10", data_dir=tmp_path / "a")
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    assert set(d.train_y.tolist()) == {7}

    py_dir = tmp_path / "b" / "cifar-10-batches-py"
    py_dir.mkdir(parents=True)
    for name, n in [*[(f"data_batch_{i}", 2) for i in range(1, 6)], ("test_batch", 2)]:
        batch = {"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "labels": [1] * n}
        (py_dir / name).write_bytes(pickle.dumps(batch))
    d = load_dataset("cifar10", data_dir=tmp_path / "b")
    assert d.train_x.shape == (10, 3, 32, 32) and set(d.train_y.tolist()) == {1}


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_data_dir_first_then_system_location(tmp_path, monkeypatch):
    monkeypatch.setattr("dualoptim.vision.data.DEBIAN_FASHION_MNIST", make_fashion(tmp_path / "system", n_train=40))
    assert load_dataset("fashion-mnist", data_dir=make_fashion(tmp_path / "mine", n_train=30)).num_train == 30
    (tmp_path / "empty").mkdir()
    assert load_dataset("fashion-mnist", data_dir=tmp_path / "empty").num_train == 40


def test_cifar_pickle_cannot_run_code(tmp_path):
    py_dir = tmp_path / "cifar-10-batches-py"
    py_dir.mkdir()
    for name in [*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]:
        (py_dir / name).write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}))
    with pytest.raises(ConfigError, match="refusing to unpickle"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        savemat(str(tmp_path / f"{split}_32x32.mat"),
                {"X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8), "y": np.array([[10], [1], [2]] * 2)[:n]})
    d = load_dataset("svhn", data_dir=tmp_path)
    assert d.train_x.shape == (6, 3, 32, 32) and d.train_y[:3].tolist() == [0, 1, 2]  # label 10 is digit 0
    assert get_dataset_info("svhn").augment == "crop"  # digits must not be mirrored


def test_stratified_subset_is_stratified_and_reproducible(digits):
    a = stratified_subset(digits.train_y, 200, seed=3)
    assert torch.equal(a, stratified_subset(digits.train_y, 200, seed=3))
    assert not torch.equal(a, stratified_subset(digits.train_y, 200, seed=4))
    assert len(a) == 200 and len(torch.unique(a)) == 200 and torch.all(a[1:] > a[:-1])
    counts = torch.bincount(digits.train_y[a], minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21
    sub = digits.subset(200, seed=3)
    assert sub.train_subset == 200 and sub.subset_seed == 3 and torch.equal(sub.train_y, digits.train_y[a])
    assert torch.equal(sub.test_x, digits.test_x)
    with pytest.raises(ConfigError, match="subset size"):
        stratified_subset(digits.train_y, 0, 0)
    with pytest.raises(ConfigError, match="already"):
        sub.subset(10)


def test_tensor_loader_epochs_cover_all_samples():
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)
    y = torch.arange(10)
    loader = TensorLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    epochs = [torch.cat([yb for _, yb in loader]) for _ in range(2)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation per epoch
    again = TensorLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert torch.equal(torch.cat([yb for _, yb in again]), epochs[0])  # deterministic given the seed
    for xb, yb in loader:
        assert torch.equal(xb.reshape(-1).long(), yb)  # images stay with their labels
    dl = TensorLoader(x, y, batch_size=4, drop_last=True)
    assert len(dl) == 2 and [len(b) for _, b in dl] == [4, 4]
    assert [b.tolist() for _, b in TensorLoader(x, y, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    xb, _ = next(iter(TensorLoader(torch.zeros(4, 3, 5, 5), y[:4], 2, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError):
        TensorLoader(x, y[:3], 2)
    with pytest.raises(ConfigError):
        TensorLoader(x[:0], y[:0], 2)


def test_augmentations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    assert torch.equal(random_crop(x, g, padding=0), x)
    c = random_crop(x, g, padding=2)
    assert c.shape == x.shape
    # each crop is a shifted window of its own zero-padded image
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        assert any(torch.equal(c[i], xp[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    f = random_flip(x, g)
    same = [(f[i] == x[i]).all().item() for i in range(64)]
    flipped = [(f[i] == x[i].flip(2)).all().item() for i in range(64)]
    assert all(s or fl for s, fl in zip(same, flipped)) and 10 < sum(flipped) < 54
    assert make_augment(None) is None and make_augment("none") is None
    assert make_augment("crop_flip")(x, g).shape == x.shape
    with pytest.raises(ConfigError, match="valid"):
        make_augment("rotate")


def test_incomplete_fashion_folder_names_missing_files(tmp_path, monkeypatch):
    monkeypatch.setattr("dualoptim.vision.data.DEBIAN_FASHION_MNIST", tmp_path / "absent")
    folder = make_fashion(tmp_path / "fm")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_download_cache_is_searched(tmp_path, monkeypatch):
    # no folder given: the system location, then ~/.cache/dualoptim (where torchvision downloads go)
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    make_fashion(tmp_path / "dualoptim" / "FashionMNIST" / "raw", n_train=30)
    monkeypatch.setattr("dualoptim.vision.data.DEBIAN_FASHION_MNIST", tmp_path / "absent")
    assert load_dataset("fashion-mnist").num_train == 30


def test_cifar100_binary(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    for name, n in (("train.bin", 6), ("test.bin", 2)):
        # records: coarse label, fine label, 3072 pixels
        rec = np.concatenate([np.full((n, 1), 3), np.arange(n)[:, None] + 90, rng.integers(0, 256, (n, 3072))], 1)
        rec.astype(np.uint8).tofile(d / name)
    data = load_dataset("cifar100", data_dir=tmp_path)
    assert data.num_classes == 100 and data.train_y.tolist() == [90, 91, 92, 93, 94, 95]


def test_tinyimagenet_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "val_annotations.txt").write_text("v0.JPEG\tn02\t0\t0\t1\t1\nv1.JPEG\tn01\t0\t0\t1\t1\n")
    for f in ("v0.JPEG", "v1.JPEG"):
        Image.new("RGB", (64, 64)).save(root / "val" / "images" / f)
    data = load_dataset("tinyimagenet", data_dir=tmp_path)
    assert data.train_x.shape == (6, 3, 64, 64) and data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test_y.tolist() == [1, 0] and data.num_classes == 2


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_subset_trains(monkeypatch):
    from dualoptim.vision.metrics import accuracy
    from dualoptim.vision.models import create_model
    from dualoptim.vision.train import TrainConfig, seed_everything, train_classifier

    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    data = load_dataset("fashion-mnist", train_subset=2000, subset_seed=0)
    assert data.num_train == 2000 and len(data.test_y) == 10000 and data.image_size == 28
    assert torch.bincount(data.train_y).tolist() == [200] * 10
    seed_everything(0)
    model = create_model("cnn", 10, 1, 28, width=8)
    train_classifier(model, data, None, TrainConfig(epochs=2), progress=False)
    assert accuracy(model, data.test_x[:2000], data.test_y[:2000]) > 70


def test_as_loader_wraps_tensor_pairs_datasets_and_data_loaders():
    from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

    from dualoptim.vision.data import DatasetLoader, as_loader

    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10, dtype=torch.int32) % 3
    cpu = torch.device("cpu")
    pair = as_loader((x, y), "forget", 4, True, 0, cpu, torch.float64)
    assert isinstance(pair, TensorLoader) and pair.num_samples == 10 and len(pair) == 3
    xb, yb = next(iter(pair))
    assert xb.dtype == torch.float64 and yb.dtype == torch.long  # inputs follow the model, labels are indices
    ev = [b for b in pair.evaluation()]
    assert torch.equal(torch.cat([b[1] for b in ev]), y.long()) and pair.shuffle  # in order; the loader unchanged

    ds = as_loader(TensorDataset(x, y), "retain", 4, True, 0, cpu, torch.float32)
    assert isinstance(ds, DatasetLoader) and ds.num_samples == 10 and len(ds) == 3
    epochs = [torch.cat([b[1] for b in ds]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == sorted(y.tolist()) and not torch.equal(epochs[0], epochs[1])  # reshuffled
    again = as_loader(TensorDataset(x, y), "retain", 4, True, 0, cpu, torch.float32)
    assert torch.equal(torch.cat([b[1] for b in again]), epochs[0])  # seeded
    assert torch.equal(torch.cat([b[0] for b in ds.evaluation()]), x)

    user = DataLoader(TensorDataset(x, y), batch_size=5)
    given = as_loader(user, "test", 4, False, 0, cpu, torch.float32)
    assert given.loader is user and given.evaluation() is given and len(given) == 2  # its own batch size

    class Stream(IterableDataset):
        def __iter__(self):
            yield from zip(x, y)

    class Single(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[i]

    for data, match in (((x[:0], y[:0]), "forget set is empty"), ((x, y[:4]), "10 inputs but 4 labels"),
                        (TensorDataset(x[:0], y[:0]), "forget set is empty"), ([1, 2, 3], "must be a torch Dataset"),
                        (Stream(), "iterable-style"), (Single(), "must be \\(inputs, labels\\) pairs")):
        with pytest.raises(ConfigError, match=match):
            list(as_loader(data, "forget", 4, False, 0, cpu, torch.float32))
