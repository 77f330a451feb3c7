"""Datasets by name, stratified subsets and label noise, the splits built from them, and augmentation.

Synthetic IDX files stand in for Fashion-MNIST (its pinned digests swapped for theirs) wherever
the search order and the messages are what is tested; the real Debian copy is loaded where present.
Augmentation is checked against scipy's gaussian_filter and map_coordinates as references.
"""

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, map_coordinates

from mnist_study.data import augment, datasets, sources
from mnist_study.data.augment import (augment_epoch, elastic_distort, gaussian_matrix, random_shift,
                                      shift_images, warp)
from mnist_study.data.datasets import (DATASETS, FASHION_MNIST_SHA256, class_names, load_named_dataset,
                                       suggest_name)
from mnist_study.data.idx import encode_idx, read_idx, write_idx
from mnist_study.data.sources import Dataset
from mnist_study.data.splits import flatten_scaled, make_splits, split_record
from mnist_study.data.subsets import class_quotas, flip_labels, stratified_subset
from mnist_study.errors import DataError, OptionError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
FILES = sources.MNIST_FILES

rng = np.random.default_rng(0)
SYNTHETIC = {
    "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
    "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
    "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
    "t10k-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
}
SYNTHETIC_SHA256 = {name: hashlib.sha256(encode_idx(a)).hexdigest() for name, a in SYNTHETIC.items()}


def write_dataset(directory: Path, arrays=SYNTHETIC) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / f"{name}.gz", array, compress=True)
    return directory


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No real user cache, no $MNIST_STUDY_DATA, and relative names resolved in an empty folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def synthetic_fashion(tmp_path, monkeypatch):
    """Synthetic files count as Fashion-MNIST, and the system folder is an empty one of ours."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_SHA256", dict(SYNTHETIC_SHA256))
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_DIR", tmp_path / "system")


# --- Datasets by name --------------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} is absent")
def test_fashion_mnist_loads_verified_from_the_system_copy():
    data = load_named_dataset("fashion-mnist")
    assert data.name == "fashion-mnist" and data.verified and data.source == str(FASHION_MNIST)
    assert data.digests == FASHION_MNIST_SHA256
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert class_names(data.name)[0] == "T-shirt/top" and class_names(data.name)[9] == "Ankle boot"


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} is absent")
def test_corrupted_fashion_mnist_is_refused_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "env" / "fashion-mnist"
    copy.mkdir(parents=True)
    for name in FILES[:3]:
        (copy / f"{name}.gz").symlink_to(FASHION_MNIST / f"{name}.gz")
    labels = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").copy()
    labels[17] = (labels[17] + 1) % 10  # one label changed: a valid file, but not Fashion-MNIST's
    write_idx(copy / "t10k-labels-idx1-ubyte", labels, compress=False)
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as caught:
        load_named_dataset("fashion-mnist")
    message = str(caught.value)
    assert f"{copy / 't10k-labels-idx1-ubyte'} is not Fashion-MNIST's t10k-labels-idx1-ubyte" in message
    assert FASHION_MNIST_SHA256["t10k-labels-idx1-ubyte"] in message
    assert f"remove ${sources.ENV_VAR}/fashion-mnist" in message


def test_fashion_mnist_search_order_is_argument_env_cache_system(tmp_path, monkeypatch, synthetic_fashion):
    explicit = write_dataset(tmp_path / "explicit")
    env = write_dataset(tmp_path / "env" / "fashion-mnist")
    cache = write_dataset(datasets.fashion_cache_dir())
    system = write_dataset(datasets.FASHION_SYSTEM_DIR)
    assert cache == tmp_path / "xdg-cache" / "mnist-study" / "fashion-mnist"
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))

    def loaded_from(data_dir=None):
        data = load_named_dataset("fashion-mnist", data_dir)
        assert data.verified and data.name == "fashion-mnist"
        return Path(data.source)

    assert loaded_from(explicit) == explicit
    assert loaded_from() == env
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "elsewhere"))  # no fashion-mnist inside: skipped
    assert loaded_from() == cache
    monkeypatch.delenv(sources.ENV_VAR)
    for name in FILES[1:]:
        (cache / f"{name}.gz").unlink()  # an incomplete cache is passed over
    assert loaded_from() == system


def test_fashion_mnist_found_nowhere_says_where_to_put_it(synthetic_fashion):
    with pytest.raises(DataError) as caught:
        load_named_dataset("fashion-mnist")
    message = str(caught.value)
    for expected in (str(datasets.fashion_cache_dir()), str(datasets.FASHION_SYSTEM_DIR),
                     "apt-get install dataset-fashion-mnist", "not downloaded", *FILES):
        assert expected in message


def test_fashion_mnist_in_the_cache_with_a_wrong_file_is_an_error(synthetic_fashion):
    write_dataset(datasets.fashion_cache_dir(), {**SYNTHETIC, "train-images-idx3-ubyte":
                                                 SYNTHETIC["train-images-idx3-ubyte"] + 1})
    with pytest.raises(DataError) as caught:
        load_named_dataset("fashion-mnist")
    message = str(caught.value)
    path = datasets.fashion_cache_dir() / "train-images-idx3-ubyte.gz"
    assert f"{path} is not Fashion-MNIST's train-images-idx3-ubyte" in message
    assert "name their folder as the dataset" in message


def test_an_existing_env_folder_for_fashion_mnist_must_be_complete(tmp_path, monkeypatch, synthetic_fashion):
    write_dataset(datasets.fashion_cache_dir())
    partial = write_dataset(tmp_path / "env" / "fashion-mnist")
    (partial / "t10k-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError, match=r"fashion-mnist \(\$MNIST_STUDY_DATA/fashion-mnist\) lacks "
                                        r"t10k-images-idx3-ubyte\[\.gz\]"):
        load_named_dataset("fashion-mnist")


def test_a_folder_loads_unverified_under_the_name_given(tmp_path):
    folder = write_dataset(tmp_path / "kmnist")
    for name in (str(folder), os.path.relpath(folder)):
        data = load_named_dataset(name)
        assert data.name == name and not data.verified and data.source == name
        np.testing.assert_array_equal(data.train_images, SYNTHETIC["train-images-idx3-ubyte"])
        assert data.digests == SYNTHETIC_SHA256
    assert class_names(str(folder)) == tuple("0123456789")


def test_a_missing_folder_names_the_path_and_the_files(tmp_path):
    with pytest.raises(DataError) as caught:
        load_named_dataset(str(tmp_path / "nowhere"))
    message = str(caught.value)
    assert f"{tmp_path / 'nowhere'} does not exist" in message and "Did you mean" not in message
    assert all(name in message for name in FILES)

    partial = write_dataset(tmp_path / "partial")
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"{partial} lacks train-labels-idx1-ubyte\\[.gz\\]"):
        load_named_dataset(str(partial))


@pytest.mark.parametrize("typo, meant", [("fashion_mnist", "fashion-mnist"), ("fasion-mnist", "fashion-mnist"),
                                         ("Fashion-MNIST", "fashion-mnist"), ("fashionmnist", "fashion-mnist"),
                                         ("MNIST", "mnist"), ("mnsit", "mnist")])
def test_typos_get_a_suggestion(typo, meant):
    assert suggest_name(typo) == meant
    with pytest.raises(DataError, match=f"Dataset '{typo}' is neither a known name .* Did you mean '{meant}'\\?"):
        load_named_dataset(typo)


@pytest.mark.parametrize("name", ["cifar10", "data/fashion_mnist", "some/where/mnist"])
def test_paths_and_unrelated_names_get_no_suggestion(name):
    assert suggest_name(name) is None
    with pytest.raises(DataError) as caught:
        load_named_dataset(name)
    assert "Did you mean" not in str(caught.value)


def test_known_names_and_their_classes():
    assert list(DATASETS) == ["mnist", "fashion-mnist"]
    assert class_names("mnist") == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    assert class_names("fashion-mnist") == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                            "Shirt", "Sneaker", "Bag", "Ankle boot")


def test_mnist_by_name_is_load_dataset(tmp_path):
    other = write_dataset(tmp_path / "other")
    data = load_named_dataset("mnist", other, download=False)
    assert not data.verified and data.name == str(other)  # not MNIST: recorded as the folder it is
    assert sources.load_named_dataset("mnist", other, download=False).digests == data.digests
    if SHARED_MNIST.is_dir():
        real = load_named_dataset("mnist", SHARED_MNIST, download=False)
        assert real.verified and real.name == "mnist" and real.digests == sources.MNIST_SHA256


# --- Subsets and label noise -------------------------------------------------------------------

IMBALANCED = np.repeat(np.arange(10), [5, 17, 3, 40, 11, 29, 2, 8, 23, 13])  # 151 labels
np.random.default_rng(1).shuffle(IMBALANCED)


def largest_remainder(labels, size):
    """The rule, written out with exact fractions: floors, then +1 for the largest remainders."""
    counts = np.bincount(labels)
    quotas = [Fraction(size * int(c), len(labels)) for c in counts]
    floors = [q.numerator // q.denominator for q in quotas]
    by_remainder = sorted(range(len(counts)), key=lambda c: (-(quotas[c] - floors[c]), c))
    for c in by_remainder[:size - sum(floors)]:
        floors[c] += 1
    return floors, quotas


@pytest.mark.parametrize("size", [0, 1, 7, 10, 50, 99, 150, 151])
def test_stratified_subset_counts_follow_the_rounding_rule(size):
    idx = stratified_subset(IMBALANCED, size, seed=3)
    assert len(idx) == size and len(np.unique(idx)) == size and np.all(np.diff(idx) > 0)
    counts = np.bincount(IMBALANCED[idx], minlength=10).tolist()
    expected, quotas = largest_remainder(IMBALANCED, size)
    assert counts == expected == list(class_quotas(IMBALANCED, size).values())
    assert all(q.numerator // q.denominator <= n <= -(-q.numerator // q.denominator) for n, q in zip(counts, quotas))
    rounded = [round(q) for q in quotas]
    if sum(rounded) == size:
        assert counts == rounded


def test_stratified_subset_is_reproducible_and_depends_on_the_seed():
    a, b = stratified_subset(IMBALANCED, 60, seed=0), stratified_subset(IMBALANCED, 60, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, stratified_subset(IMBALANCED, 60, seed=1))
    with pytest.raises(OptionError, match="a subset of 152 cannot be drawn from 151 labels"):
        stratified_subset(IMBALANCED, 152, seed=0)


def test_flip_labels_flips_exactly_the_fraction_each_to_another_class():
    labels = np.random.default_rng(2).integers(0, 10, 1001).astype(np.uint8)
    before = labels.copy()
    for fraction in (0.0, 0.1, 0.25, 0.5, 0.999):
        noisy, flipped = flip_labels(labels, fraction, seed=4)
        assert len(flipped) == round(fraction * 1001) and len(np.unique(flipped)) == len(flipped)
        assert noisy.dtype == labels.dtype and np.all(noisy[flipped] != labels[flipped])
        untouched = np.setdiff1d(np.arange(1001), flipped)
        np.testing.assert_array_equal(noisy[untouched], labels[untouched])
    np.testing.assert_array_equal(labels, before)  # not in place
    again = flip_labels(labels, 0.3, seed=4)
    np.testing.assert_array_equal(again[0], flip_labels(labels, 0.3, seed=4)[0])
    assert not np.array_equal(again[1], flip_labels(labels, 0.3, seed=5)[1])
    for bad in (-0.1, 1.0):
        with pytest.raises(OptionError, match=r"in \[0, 1\)"):
            flip_labels(labels, bad, seed=0)


def test_flipped_labels_are_uniform_over_the_other_classes():
    labels = np.zeros(90000, dtype=np.int64)
    noisy, flipped = flip_labels(labels, 0.9, seed=0)
    counts = np.bincount(noisy[flipped], minlength=10)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / len(flipped) - 1 / 9) < 0.01)  # 81,000 draws: sd about 0.001


# --- Splits ------------------------------------------------------------------------------------


def paper_splits(dataset, validation="last", validation_size=5000, train_size=None):
    """make_splits as it was before subsets and noise: the paper's splits, first-N train_size."""
    x = flatten_scaled(dataset.train_images)
    y = dataset.train_labels.astype(np.int64)
    n = len(y)
    if validation == "last":
        train, val = slice(0, n - validation_size), slice(n - validation_size, n)
    else:
        train, val = slice(validation_size, n), slice(0, validation_size)
    x_train, y_train = x[train], y[train]
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    return {"train": (x_train, y_train), "validation": (x[val], y[val]),
            "test": (flatten_scaled(dataset.test_images), dataset.test_labels.astype(np.int64))}


def small_dataset(n_train=1000, n_test=50, seed=0):
    g = np.random.default_rng(seed)
    return Dataset(train_images=g.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                   train_labels=np.repeat(np.arange(10), n_train // 10)[g.permutation(n_train)].astype(np.uint8),
                   test_images=g.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                   test_labels=g.integers(0, 10, n_test, dtype=np.uint8), source="memory", digests={},
                   verified=False, name="small")


def assert_splits_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        for got, want in zip(a[name], b[name]):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("validation", ["last", "first"])
def test_default_splits_are_the_papers(validation):
    data = small_dataset()
    assert_splits_equal(make_splits(data, validation, 200), paper_splits(data, validation, 200))
    assert_splits_equal(make_splits(data, validation, 200, None, label_noise=0.0, data_seed=7),
                        paper_splits(data, validation, 200))
    record = split_record(data, validation, 200)
    start = 0 if validation == "last" else 200
    np.testing.assert_array_equal(record["train_indices"], np.arange(start, start + 800))
    assert len(record["flipped_indices"]) == len(record["flipped_labels"]) == 0


def test_train_size_takes_a_stratified_subset_in_order():
    data = small_dataset()
    splits = make_splits(data, "first", 200, 250, data_seed=3)
    record = split_record(data, "first", 200, 250, data_seed=3)
    idx = record["train_indices"]
    assert len(idx) == 250 and np.all(np.diff(idx) > 0) and idx.min() >= 200
    x, y = splits["train"]
    np.testing.assert_array_equal(x, flatten_scaled(data.train_images[idx]))
    np.testing.assert_array_equal(y, data.train_labels[idx])
    expected, _ = largest_remainder(data.train_labels[200:], 250)
    assert np.bincount(y, minlength=10).tolist() == expected
    np.testing.assert_array_equal(idx, 200 + stratified_subset(data.train_labels[200:], 250, 3))
    assert not np.array_equal(idx, split_record(data, "first", 200, 250, data_seed=4)["train_indices"])
    paper = paper_splits(data, "first", 200)
    assert_splits_equal({k: splits[k] for k in ("validation", "test")}, {k: paper[k] for k in ("validation", "test")})
    with pytest.raises(OptionError, match="train_size must be between 1 and the 800 training images"):
        make_splits(data, "first", 200, 801)


def test_label_noise_touches_only_training_labels_as_recorded():
    data = small_dataset()
    splits = make_splits(data, "last", 200, 500, label_noise=0.2, data_seed=1)
    record = split_record(data, "last", 200, 500, label_noise=0.2, data_seed=1)
    y_train = splits["train"][1]
    true = data.train_labels[record["train_indices"]].astype(np.int64)
    changed = np.flatnonzero(y_train != true)
    assert len(changed) == round(0.2 * 500) == len(record["flipped_indices"])
    np.testing.assert_array_equal(record["train_indices"][changed], record["flipped_indices"])
    np.testing.assert_array_equal(y_train[changed], record["flipped_labels"])
    np.testing.assert_array_equal(splits["train"][0], flatten_scaled(data.train_images[record["train_indices"]]))
    paper = paper_splits(data, "last", 200)
    assert_splits_equal({k: splits[k] for k in ("validation", "test")}, {k: paper[k] for k in ("validation", "test")})
    assert_splits_equal(splits, make_splits(data, "last", 200, 500, label_noise=0.2, data_seed=1))
    # The whole training part, made noisy: the images stay the paper's, only labels change.
    noisy = make_splits(data, "last", 200, label_noise=0.1)
    np.testing.assert_array_equal(noisy["train"][0], paper["train"][0])
    assert np.count_nonzero(noisy["train"][1] != paper["train"][1]) == 80


# --- Augmentation ------------------------------------------------------------------------------


def one_pixel(n, y=13, x=14):
    images = torch.zeros(n, 28, 28)
    images[:, y, x] = 1.0
    return images.reshape(n, 784)


def test_random_shift_moves_a_lit_pixel_by_the_drawn_offsets():
    n, k = 2000, 3
    generator = torch.Generator().manual_seed(0)
    replay = torch.Generator().set_state(generator.get_state())
    shifted = random_shift(one_pixel(n), k, generator).reshape(n, 28, 28)
    assert torch.all(shifted.sum(dim=(1, 2)) == 1)
    lit = shifted.reshape(n, -1).argmax(dim=1)
    dy, dx = lit // 28 - 13, lit % 28 - 14
    drawn = torch.randint(-k, k + 1, (2, n), generator=replay)
    assert torch.equal(dx, drawn[0]) and torch.equal(dy, drawn[1])
    assert {(int(a), int(b)) for a, b in zip(dx, dy)} == {(a, b) for a in range(-k, k + 1) for b in range(-k, k + 1)}


def test_shift_images_zero_fills_and_agrees_with_a_per_image_reference(monkeypatch):
    images = torch.rand(60, 784)
    g = torch.Generator().manual_seed(1)
    dx, dy = torch.randint(-5, 6, (60,), generator=g), torch.randint(-5, 6, (60,), generator=g)
    expected = np.zeros((60, 28, 28), np.float32)
    source = images.numpy().reshape(60, 28, 28)
    for i in range(60):
        a, b = int(dy[i]), int(dx[i])
        expected[i, max(a, 0):28 + min(a, 0), max(b, 0):28 + min(b, 0)] = \
            source[i, max(-a, 0):28 - max(a, 0), max(-b, 0):28 - max(b, 0)]
    monkeypatch.setattr(augment, "CHUNK", 7)  # chunks and groups must not change a deterministic shift
    np.testing.assert_array_equal(shift_images(images, dx, dy).numpy().reshape(60, 28, 28), expected)
    ones = shift_images(torch.ones(1, 784), torch.tensor([2]), torch.tensor([-3]))
    assert ones.sum() == (28 - 2) * (28 - 3)
    assert torch.equal(random_shift(images, 0, g), images)


def test_gaussian_matrix_smooths_as_scipy_does():
    fields = np.random.default_rng(0).random((3, 28, 28)) * 2 - 1
    for sigma in (1.5, 4.0, 9.0):
        G = gaussian_matrix(sigma).double().numpy()
        for field in fields:
            reference = gaussian_filter(field, sigma, mode="constant", cval=0.0, truncate=4.0)
            np.testing.assert_allclose(G @ field @ G.T, reference, atol=1e-6)


def test_warp_resamples_as_scipy_map_coordinates():
    g = np.random.default_rng(1)
    images, moves = g.random((4, 784)).astype(np.float32), g.normal(0, 3, (2, 4, 28, 28)).astype(np.float32)
    ours = warp(torch.from_numpy(images), torch.from_numpy(moves[0]), torch.from_numpy(moves[1])).numpy()
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(4):
        reference = map_coordinates(images[i].reshape(28, 28).astype(np.float64),
                                    [yy + moves[1, i], xx + moves[0, i]], order=1, mode="grid-constant")
        np.testing.assert_allclose(ours[i], reference.ravel(), atol=1e-5)


def test_elastic_distort_is_simards_recipe_from_the_same_draws():
    images = torch.rand(5, 784)
    generator, replay = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ours = elastic_distort(images, alpha=20.0, sigma=3.0, generator=generator).numpy()
    uniform = torch.rand((5, 2, 28, 28), generator=replay).double().numpy() * 2 - 1
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(5):
        dx, dy = (gaussian_filter(u, 3.0, mode="constant", cval=0.0) * 20.0 for u in uniform[i])
        reference = map_coordinates(images[i].numpy().reshape(28, 28).astype(np.float64), [yy + dy, xx + dx],
                                    order=1, mode="grid-constant")
        np.testing.assert_allclose(ours[i], np.clip(reference, 0, 1).ravel(), atol=1e-4)


def test_elastic_distort_keeps_shape_and_range_and_is_the_identity_at_alpha_zero(monkeypatch):
    monkeypatch.setattr(augment, "CHUNK", 64)  # several chunks, the last one short
    images = torch.rand(150, 784)
    out = elastic_distort(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == (150, 784) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert (out - images).abs().mean() > 0.05  # it did move things
    same = elastic_distort(images, alpha=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)


def test_augment_epoch_is_reproducible_per_seed_and_epoch_and_independent_of_global_state():
    images = torch.rand(300, 784)
    first = augment_epoch(images, epoch=2, seed=5, shift=2, elastic=True)
    torch.manual_seed(123)
    torch.rand(1000)  # draws from torch's global generator must not matter
    augment_epoch(images, epoch=1, seed=5, shift=2, elastic=True)  # nor other epochs drawn before
    assert torch.equal(first, augment_epoch(images, epoch=2, seed=5, shift=2, elastic=True))
    assert not torch.equal(first, augment_epoch(images, epoch=3, seed=5, shift=2, elastic=True))
    assert not torch.equal(first, augment_epoch(images, epoch=2, seed=6, shift=2, elastic=True))
    assert first.shape == (300, 784) and first.dtype == torch.float32 and 0 <= first.min() <= first.max() <= 1
    shifted_only = augment_epoch(one_pixel(300), epoch=0, seed=0, shift=1)
    assert torch.all(shifted_only.sum(dim=1) == 1)
    assert torch.equal(augment_epoch(images, epoch=0, seed=0), images)
