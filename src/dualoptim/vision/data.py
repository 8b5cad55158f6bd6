"""Image datasets held in memory as tensors, a fast batch iterator and batched augmentation.

Public API (other modules build on these names):

- ``load_dataset(name, data_dir=None, train_subset=None, subset_seed=0) -> ImageData``
- ``list_datasets()``, ``get_dataset_info(name) -> DatasetInfo`` (default model/epochs/augmentation)
- ``ImageData``: ``train_x, train_y, test_x, test_y`` (float32 NCHW, normalized once with the training
  set's per-channel mean/std; int64 labels), ``num_classes, in_channels, image_size, name``;
  ``.subset(n, seed)`` keeps a stratified, seeded n-image training subset.
- ``TensorLoader(x, y, batch_size, shuffle, seed=..., augment=None, drop_last=False, channels_last=False)``:
  re-iterable, one fresh permutation per epoch, yields ``(x, y)`` batches by tensor indexing.
- ``as_loader(data, name, batch_size, shuffle, seed, device, dtype)``: the same for a user's ``(x, y)`` tensor
  pair, map-style ``Dataset`` or ``DataLoader`` (``dualoptim.unlearn``'s inputs), batches on the model's device.
- ``make_augment(name)``: ``None``, ``"crop_flip"`` (pad 4 + random crop + horizontal flip, CIFAR),
  ``"crop"`` (no flip: SVHN digits must not be mirrored); applied to whole batches.

Where data comes from, in order: ``data_dir`` (else ``$DUALOPTIM_DATA_DIR``), the system location, the download
cache ``~/.cache/dualoptim``, then a torchvision download when torchvision is installed and the network allows:
``fashion-mnist`` reads the idx files of Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist);
``digits`` is scikit-learn's bundled 8x8 digits (fixed stratified 1347/450 split, for fast tests);
``cifar10``/``cifar100`` read ``cifar-10-batches-{py,bin}`` / ``cifar-100-{python,binary}``; ``svhn`` reads
``{train,test}_32x32.mat``; ``tinyimagenet`` reads the ``tiny-imagenet-200`` folder. Missing data raises
one :class:`DataNotFoundError` listing the ways to provide it. Nothing here executes pickled code: the
CIFAR python pickles are read with an unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataNotFoundError
from ..registry import Registry

ENV_DATA_DIR = "DUALOPTIM_DATA_DIR"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset in memory. Tensors are float32 NCHW (normalized) and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    train_subset: int | None = None  # n if the training set is a subset of the full one
    subset_seed: int | None = None

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
                raise ConfigError(f"{self.name} {split} images have shape {tuple(x.shape)}, expected "
                                  f"(N, {self.in_channels}, {self.image_size}, {self.image_size})")
            if len(x) != len(y):
                raise ConfigError(f"{self.name} {split}: {len(x)} images but {len(y)} labels")

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """A copy whose training set is ``n`` images, stratified by class and seeded (test set unchanged).

        The kept indices are in their original order; forget sets of a model trained on the subset are
        indices into the subset (``train_subset``/``subset_seed`` are recorded so it can be rebuilt).
        """
        if self.train_subset is not None:
            raise ConfigError(f"{self.name} is already a {self.train_subset}-image subset")
        idx = stratified_subset(self.train_y, n, seed)
        return replace(self, train_x=self.train_x[idx].contiguous(), train_y=self.train_y[idx].contiguous(),
                       train_subset=n, subset_seed=seed)


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``n`` samples with class proportions as close as possible to ``labels``'."""
    total = len(labels)
    if not 0 < n <= total:
        raise ConfigError(f"subset size must be in [1, {total}], got {n}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)
    y = labels[perm]
    counts = torch.bincount(y).double()
    # rank of each permuted sample among its class; sorting by (rank + 0.5) / count interleaves classes
    # in proportion, so the first n are stratified.
    order = torch.argsort(y, stable=True)
    rank = torch.empty(total, dtype=torch.float64)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(total, dtype=torch.float64) - starts[y[order]]
    key = (rank + 0.5) / counts[y]
    chosen = perm[torch.argsort(key, stable=True)[:n]]
    return torch.sort(chosen).values


# ----------------------------------------------------------------------------------- batches

class TensorLoader:
    """Batches of in-memory tensors; re-iterable (one new permutation per epoch, from ``seed``/``generator``).

    Args:
        x, y: images (N, C, H, W) and labels (N,).
        batch_size: samples per batch.
        shuffle: draw a fresh permutation each epoch.
        seed / generator: randomness for shuffling and augmentation (deterministic given the seed).
        augment: a batched augmentation ``f(x, generator) -> x`` (see :func:`make_augment`).
        drop_last: skip the last incomplete batch.
        channels_last: return batches in ``torch.channels_last`` memory format.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, *,
                 seed: int | None = None, generator: torch.Generator | None = None, augment: Augment | None = None,
                 drop_last: bool = False, channels_last: bool = False) -> None:
        if len(x) != len(y):
            raise ConfigError(f"{len(x)} images but {len(y)} labels")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) == 0:
            raise ConfigError("cannot iterate over an empty set of samples")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.augment, self.drop_last, self.channels_last = augment, drop_last, channels_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(
            0 if seed is None else seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def evaluation(self) -> TensorLoader:
        """The same samples in order, without augmentation (for metrics)."""
        ev = copy.copy(self)
        ev.shuffle, ev.augment = False, None
        return ev


class DatasetLoader:
    """``(x, y)`` batches of a user's map-style ``Dataset`` (batched here, shuffled from ``seed``) or
    ``DataLoader`` (used as given: its batch size and shuffling are kept), moved to ``device``; floating-point
    inputs are cast to ``dtype``. Same interface as :class:`TensorLoader` (``evaluation``, ``num_samples``)."""

    def __init__(self, data: Dataset | DataLoader, name: str, batch_size: int, shuffle: bool, seed: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.name, self.device, self.dtype, self.batch_size = name, device, dtype, batch_size
        if isinstance(data, DataLoader):
            self.loader, self.owned = data, False
            self.num_samples = len(data.dataset) if hasattr(data.dataset, "__len__") else len(data)  # type: ignore
        else:
            if not hasattr(data, "__len__"):
                raise ConfigError(f"{name}: an iterable-style dataset has no length; pass a DataLoader instead")
            self.num_samples = len(data)  # type: ignore[arg-type]
        if self.num_samples == 0:
            raise ConfigError(f"the {name} set is empty")
        if not isinstance(data, DataLoader):
            self.loader, self.owned = DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                                                 generator=torch.Generator().manual_seed(seed)), True

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ConfigError(f"{self.name}: batches must be (inputs, labels) pairs, got {type(batch).__name__}; "
                                  "wrap the dataset so that dataset[i] returns (x, y)")
            yield (_on(torch.as_tensor(batch[0]), self.device, self.dtype),
                   torch.as_tensor(batch[1]).to(self.device, dtype=torch.long))

    def evaluation(self) -> DatasetLoader:
        """The same data in order (a dataset given here) or the user's DataLoader as given, for metrics."""
        if not self.owned:
            return self
        ev = copy.copy(self)
        ev.loader = DataLoader(self.loader.dataset, batch_size=self.batch_size, shuffle=False)
        return ev


def _on(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.to(dtype) if x.is_floating_point() else x


Data = Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor] | Sequence[torch.Tensor]


def as_loader(data: Data, name: str, batch_size: int, shuffle: bool, seed: int, device: torch.device,
              dtype: torch.dtype) -> TensorLoader | DatasetLoader:
    """Re-iterable ``(x, y)`` batches of a user input: an ``(x, y)`` tensor pair (a :class:`TensorLoader` on
    ``device``, floating-point inputs cast to ``dtype``), a map-style ``Dataset`` or a ``DataLoader``."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise ConfigError(f"{name}: {len(x)} inputs but {len(y)} labels")
        if not len(y):
            raise ConfigError(f"the {name} set is empty")
        return TensorLoader(_on(x, device, dtype), y.to(device=device, dtype=torch.long), batch_size, shuffle,
                            seed=seed)
    if isinstance(data, (Dataset, DataLoader)):
        return DatasetLoader(data, name, batch_size, shuffle, seed, device, dtype)
    raise ConfigError(f"{name} must be a torch Dataset, a DataLoader or an (x, y) pair of tensors, got "
                      f"{type(data).__name__}")


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per image (batched)."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image horizontally with probability 1/2 (batched)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


AUGMENTS: Registry[Augment | None] = Registry("augmentation", {
    "none": None,
    "crop": lambda x, g: random_crop(x, g),
    "crop_flip": lambda x, g: random_flip(random_crop(x, g), g),
    "flip": random_flip,
})


def make_augment(name: str | None) -> Augment | None:
    """The batched augmentation called ``name`` (``None``/``"none"``: no augmentation)."""
    return None if name is None else AUGMENTS.get(name)


# ---------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its loader and the defaults the CLI uses for it."""

    name: str
    loader: Callable[[Path | None], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]
    description: str
    default_model: str = "cnn"
    default_model_options: dict = field(default_factory=dict)  # used when the default model is used
    default_epochs: int = 10
    augment: str = "none"
    how_to_get: str = ""


DATASETS: Registry[DatasetInfo] = Registry("dataset")
list_datasets = DATASETS.names  # registered dataset names, sorted
get_dataset_info = DATASETS.get  # the entry of a name; ConfigError listing valid names if unknown


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to the registry under ``info.name`` (lower case, unique)."""
    return DATASETS.add(info.name, info)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, train_subset: int | None = None,
                 subset_seed: int = 0) -> ImageData:
    """Load dataset ``name`` into memory, normalized with its training set's per-channel mean and std.

    Args:
        name: one of :func:`list_datasets`.
        data_dir: folder searched first (else ``$DUALOPTIM_DATA_DIR``); then the system location and the cache.
        train_subset: keep a stratified seeded subset of this many training images (fast presets).
        subset_seed: seed of that subset.
    """
    info = get_dataset_info(name)
    folder = Path(data_dir) if data_dir is not None else (
        Path(os.environ[ENV_DATA_DIR]) if os.environ.get(ENV_DATA_DIR) else None)
    if folder is not None and not folder.is_dir():
        raise DataNotFoundError(f"data folder {folder} does not exist ({info.how_to_get})")
    train_x, train_y, test_x, test_y, num_classes = info.loader(folder)
    # np.require copies read-only buffers (idx files are read with np.frombuffer)
    train_images = torch.from_numpy(np.require(train_x, requirements=["C", "W"])).float()
    test_images = torch.from_numpy(np.require(test_x, requirements=["C", "W"])).float()
    scale = 255.0 if train_x.dtype == np.uint8 else 1.0
    train_images /= scale
    test_images /= scale
    # normalization is applied once here, so batches need no per-step transform
    mean = train_images.mean(dim=(0, 2, 3))
    std = train_images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    train_images = (train_images - mean[:, None, None]) / std[:, None, None]
    test_images = (test_images - mean[:, None, None]) / std[:, None, None]
    data = ImageData(name=info.name, train_x=train_images, train_y=torch.from_numpy(np.asarray(train_y, np.int64)),
                     test_x=test_images, test_y=torch.from_numpy(np.asarray(test_y, np.int64)),
                     num_classes=num_classes, in_channels=train_images.shape[1],
                     image_size=train_images.shape[2], mean=tuple(mean.tolist()),
                     std=tuple(std.tolist()))
    return data.subset(train_subset, subset_seed) if train_subset is not None else data


def _cache_root(folder: Path | None) -> Path:
    """Where torchvision downloads go: the given folder, else ``$XDG_CACHE_HOME/dualoptim``."""
    if folder is not None:
        return folder
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dualoptim"


def _torchvision_download(cls_name: str, root: Path) -> bool:
    """Ask torchvision to download a dataset into ``root``; False if torchvision or the network is missing."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return False
    try:
        for train in (True, False):
            if cls_name == "SVHN":
                tvd.SVHN(str(root), split="train" if train else "test", download=True)
            else:
                getattr(tvd, cls_name)(str(root), train=train, download=True)
    except Exception:  # network errors come in many types (URLError, RuntimeError, ...)
        return False
    return True


def _locate(name: str, folder: Path | None, subdirs: tuple[str, ...], find: Callable[[Path], tuple | None],
            how: str, torchvision_name: str | None = None, system: Path | None = None) -> tuple:
    """Load a dataset with ``find(dir)`` (None when absent) from the first folder holding it.

    Searched: ``folder`` (``--data-dir`` or ``$DUALOPTIM_DATA_DIR``), ``system`` and the download cache, each
    also with ``subdirs``; then a torchvision download (into ``folder`` if given, else the cache). Absent
    everywhere: one error listing what was searched and how to provide the data.
    """
    roots = list(dict.fromkeys(r for r in (folder, system, _cache_root(None)) if r is not None))
    searched: list[Path] = []

    def search(root: Path) -> tuple | None:
        for d in (root, *(root / s for s in subdirs)):
            searched.append(d)
            hit = find(d) if d.is_dir() else None
            if hit is not None:
                return hit
        return None

    for root in roots:
        if (hit := search(root)) is not None:
            return hit
    if torchvision_name is not None and _torchvision_download(torchvision_name, _cache_root(folder)):
        if (hit := search(_cache_root(folder))) is not None:
            return hit
    where = ", ".join(str(p) for p in searched)
    raise DataNotFoundError(f"{name} not found (searched {where}). Provide it by one of: {how}")


# ------------------------------------------------------------------------------ fashion-mnist

def _read_idx(path: Path) -> np.ndarray:
    """Read an (optionally gzipped) idx file: big-endian header, then unsigned bytes."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


FASHION_HOW = (f"(1) sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu, files in {DEBIAN_FASHION_MNIST}); "
               f"(2) --data-dir DIR or export {ENV_DATA_DIR}=DIR with {{train,t10k}}-{{images-idx3,labels-idx1}}"
               "-ubyte[.gz]; (3) pip install torchvision and allow network access (downloaded automatically)")


def _fashion_from(d: Path) -> tuple | None:
    def part(stem: str) -> np.ndarray | None:
        for ext in (".gz", ""):
            if (d / f"{stem}{ext}").is_file():
                return _read_idx(d / f"{stem}{ext}")
        return None

    if part("train-labels-idx1-ubyte") is None:
        return None
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    arrays = [part(stem) for stem in stems]
    missing = [stem for stem, a in zip(stems, arrays) if a is None]
    if missing:
        raise DataNotFoundError(f"Fashion-MNIST in {d} is incomplete: {missing} missing. {FASHION_HOW}")
    train_x, train_y, test_x, test_y = arrays
    return train_x[:, None], train_y, test_x[:, None], test_y, 10


def _load_fashion_mnist(folder: Path | None):
    return _locate("Fashion-MNIST", folder, ("fashion-mnist", "FashionMNIST/raw"), _fashion_from, FASHION_HOW,
                   torchvision_name="FashionMNIST", system=DEBIAN_FASHION_MNIST)


# ------------------------------------------------------------------------------------ digits

def _load_digits(folder: Path | None):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    # a fixed stratified split (seed 0) so every run sees the same 1347 training / 450 test images
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, size=round(len(idx) * 0.25), replace=False)] = True
    return x[~test], y[~test], x[test], y[test], 10


# ----------------------------------------------------------------------------- cifar / svhn

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtins only: the CIFAR pickles cannot run code through it."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise ConfigError(f"refusing to unpickle {module}.{name}: not a plain CIFAR batch file")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()


def _cifar_how(name: str) -> str:
    return (f"(1) --data-dir DIR or export {ENV_DATA_DIR}=DIR containing the extracted {name} archive "
            f"(python or binary version); (2) pip install torchvision and allow network access "
            f"(downloaded into DIR or ~/.cache/dualoptim); (3) copy it from a machine that has it")


def _read_cifar_bin(paths: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records: ``label_bytes`` label bytes (the last one is used) then 3072 pixel bytes."""
    records = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
    if records.size % (label_bytes + 3072):
        raise ConfigError(f"{paths[0].parent}: CIFAR binary files are truncated")
    records = records.reshape(-1, label_bytes + 3072)
    return records[:, label_bytes:].reshape(-1, 3, 32, 32), records[:, label_bytes - 1].astype(np.int64)


def _cifar_from(d: Path, classes: int) -> tuple | None:
    if classes == 10 and (d / "data_batch_1").is_file():
        parts = [_unpickle(d / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(d / "test_batch")
        train_x = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
        train_y = np.concatenate([np.asarray(p["labels"]) for p in parts])
        return train_x, train_y, test["data"].reshape(-1, 3, 32, 32), np.asarray(test["labels"]), 10
    if classes == 100 and (d / "train").is_file() and (d / "meta").is_file():
        train, test = _unpickle(d / "train"), _unpickle(d / "test")
        return (train["data"].reshape(-1, 3, 32, 32), np.asarray(train["fine_labels"]),
                test["data"].reshape(-1, 3, 32, 32), np.asarray(test["fine_labels"]), 100)
    bin_train = [d / f"data_batch_{i}.bin" for i in range(1, 6)] if classes == 10 else [d / "train.bin"]
    bin_test = d / ("test_batch.bin" if classes == 10 else "test.bin")
    if all(p.is_file() for p in bin_train) and bin_test.is_file():
        label_bytes = 1 if classes == 10 else 2  # CIFAR-100 records: coarse label, fine label, pixels
        train_x, train_y = _read_cifar_bin(bin_train, label_bytes)
        test_x, test_y = _read_cifar_bin([bin_test], label_bytes)
        return train_x, train_y, test_x, test_y, classes
    return None


def _load_cifar(folder: Path | None, classes: int):
    subdirs = ("cifar-10-batches-py", "cifar-10-batches-bin") if classes == 10 else ("cifar-100-python",
                                                                                  "cifar-100-binary")
    return _locate(f"CIFAR-{classes}", folder, subdirs, lambda d: _cifar_from(d, classes),
                   _cifar_how(f"CIFAR-{classes}"), torchvision_name=f"CIFAR{classes}")


SVHN_HOW = (f"(1) --data-dir DIR or export {ENV_DATA_DIR}=DIR with train_32x32.mat and test_32x32.mat; "
            "(2) pip install torchvision and allow network access (downloaded into DIR or ~/.cache/dualoptim); "
            "(3) copy the two .mat files from http://ufldl.stanford.edu/housenumbers/")


def _svhn_from(d: Path) -> tuple | None:
    from scipy.io import loadmat

    if not ((d / "train_32x32.mat").is_file() and (d / "test_32x32.mat").is_file()):
        return None
    out = []
    for split in ("train", "test"):
        m = loadmat(str(d / f"{split}_32x32.mat"))
        y = m["y"].reshape(-1).astype(np.int64) % 10  # label 10 means digit 0
        out += [np.transpose(m["X"], (3, 2, 0, 1)), y]
    return (*out, 10)


def _load_svhn(folder: Path | None):
    return _locate("SVHN", folder, ("svhn", "SVHN"), _svhn_from, SVHN_HOW, torchvision_name="SVHN")


TINY_HOW = (f"(1) --data-dir DIR or export {ENV_DATA_DIR}=DIR containing the extracted tiny-imagenet-200 folder "
            "(wnids.txt, train/, val/); (2) download http://cs231n.stanford.edu/tiny-imagenet-200.zip on a machine "
            "with network access and unzip it there; (3) mount a shared copy")


def _tiny_from(d: Path) -> tuple | None:
    from PIL import Image

    if not ((d / "wnids.txt").is_file() and (d / "train").is_dir() and (d / "val" / "val_annotations.txt").is_file()):
        return None
    wnids = (d / "wnids.txt").read_text().split()
    cls = {w: i for i, w in enumerate(wnids)}

    def read(paths: list[Path]) -> np.ndarray:
        # load-time loop only (decoding JPEGs); training never touches files
        return np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in paths])

    train = [(p, cls[w]) for w in wnids for p in sorted((d / "train" / w / "images").glob("*.JPEG"))]
    val = [line.split("\t")[:2] for line in (d / "val" / "val_annotations.txt").read_text().splitlines()
           if line.strip()]
    return (read([p for p, _ in train]), np.array([c for _, c in train]),
            read([d / "val" / "images" / f for f, _ in val]), np.array([cls[w] for _, w in val]), len(wnids))


def _load_tinyimagenet(folder: Path | None):
    return _locate("TinyImageNet", folder, ("tiny-imagenet-200",), _tiny_from, TINY_HOW)


register_dataset(DatasetInfo("fashion-mnist", _load_fashion_mnist, "Fashion-MNIST, 60k/10k 28x28 grey, 10 classes",
                             default_model="cnn", default_model_options={"width": 16}, default_epochs=5,
                             how_to_get=FASHION_HOW))
register_dataset(DatasetInfo("digits", _load_digits, "scikit-learn digits, 1347/450 8x8 grey (fast tests)",
                             default_model="cnn", default_epochs=20))
register_dataset(DatasetInfo("cifar10", lambda f: _load_cifar(f, 10), "CIFAR-10, 50k/10k 32x32 RGB",
                             default_model="resnet18", default_epochs=200, augment="crop_flip",
                             how_to_get=_cifar_how("CIFAR-10")))
register_dataset(DatasetInfo("cifar100", lambda f: _load_cifar(f, 100), "CIFAR-100, 50k/10k 32x32 RGB",
                             default_model="resnet18", default_epochs=200, augment="crop_flip",
                             how_to_get=_cifar_how("CIFAR-100")))
register_dataset(DatasetInfo("svhn", _load_svhn, "SVHN, 73k/26k 32x32 RGB digits", default_model="resnet18",
                             default_epochs=50, augment="crop", how_to_get=SVHN_HOW))
register_dataset(DatasetInfo("tinyimagenet", _load_tinyimagenet, "TinyImageNet, 100k/10k 64x64 RGB, 200 classes",
                             default_model="swin_t", default_epochs=50, augment="crop_flip", how_to_get=TINY_HOW))
