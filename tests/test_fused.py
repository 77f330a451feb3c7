"""The compiled CPU epoch (kernels/fused_epoch.cpp) against the reference and the eager step.

Every kernel test runs on both builds (fused.VARIANTS): the native one and the one without AVX-512,
whose portable loops a native build on an AVX-512 machine never compiles. Where the CPU has no
AVX-512 the two builds run the same loops, and the tests still hold.
"""

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_study.training import fused
from mnist_study.training.model import PARAM_NAMES, init_params
from mnist_study.training.trainer import Split, StackedTrainer, TrainConfig, reference_train_epoch, train_seeds

MISSING_TOOLS = fused.missing_tools()


@pytest.fixture(scope="module", params=list(fused.VARIANTS))
def built(request) -> fused.Kernel:
    if MISSING_TOOLS:
        pytest.skip(f"{MISSING_TOOLS}: training takes the eager step (tested in test_train.py)")
    return fused.build(request.param)  # an error, not a skip: with the tools here, the kernel must build


@pytest.fixture
def kernel(built, fresh_fused, monkeypatch) -> fused.Kernel:
    """The build under test, selected through MNIST_STUDY_FUSED, so that every trainer takes it."""
    monkeypatch.setenv(fused.ENV_SWITCH, "1" if built.variant == "native" else built.variant)
    assert fused.require().library == built.library
    return built


def _cpu_has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def test_each_build_compiles_the_loops_it_claims(kernel):
    """The build without AVX-512 has no 512-bit instruction at all; the native one, on a CPU with
    AVX-512, has them (its hand-written AVX-512 loops)."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump is needed to read the library's instructions")
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(kernel.library)], capture_output=True,
                             text=True, check=True).stdout
    assert "train_epoch" in listing  # the disassembly is of the kernel
    uses_zmm = "%zmm" in listing
    if kernel.variant == "no_avx512":
        assert not uses_zmm
    elif _cpu_has_avx512():
        assert uses_zmm


def _sparse_digits(n=500, d=196, seed=0):
    """MNIST-like inputs: a blank border (pixels no image uses) and ~20% non-zero pixels elsewhere."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, d, generator=g)
    x[torch.rand(n, d, generator=g) < 0.75] = 0.0
    x[:, :30] = 0.0
    x[:, -25:] = 0.0
    x[torch.arange(n), 40 + 10 * y] = 1.0  # learnable
    return Split(x, y)


def _reference_params(train: Split, config: TrainConfig, seed: int, epochs: int) -> dict[str, torch.Tensor]:
    params = {k: v.clone().requires_grad_(True) for k, v in init_params(train.x.shape[1], config.hidden, seed).items()}
    optimizer = torch.optim.RMSprop(list(params.values()), lr=1e-3, alpha=0.9, eps=1e-7)
    shuffle = torch.Generator().manual_seed(seed + 1_000_003)  # the trainer's shuffling stream
    for _ in range(epochs):
        reference_train_epoch(params, optimizer, train, torch.randperm(len(train), generator=shuffle), config)
    return {k: v.detach() for k, v in params.items()}


@pytest.mark.parametrize("hidden", [1, 17, 40])  # below, not a multiple of, and above 16 lanes
@pytest.mark.parametrize("inputs", ["sparse", "dense"])
def test_fused_epoch_agrees_with_autograd_and_torch_rmsprop(kernel, hidden, inputs):
    g = torch.Generator().manual_seed(1)  # its own stream: the same data whatever ran before
    train = _sparse_digits() if inputs == "sparse" else Split(torch.rand(500, 37, generator=g),
                                                              torch.randint(0, 10, (500,), generator=g))
    config = TrainConfig(hidden=hidden, l2=0.001, max_epochs=2, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [3, 4], torch.device("cpu"), use_fused=True)
    assert trainer.kernel.library == kernel.library
    for _ in range(2):
        trainer.train_epoch(train)
    for index, seed in enumerate([3, 4]):
        expected = _reference_params(train, config, seed, epochs=2)
        for name in PARAM_NAMES:
            torch.testing.assert_close(trainer.params[name][index], expected[name], rtol=1e-4, atol=1e-5)


def test_fused_and_eager_report_the_same_epoch_metrics(kernel):
    train = _sparse_digits(650)  # a short last batch
    config = TrainConfig(hidden=24, l2=0.001)
    losses = {}
    for use_fused in (True, False):
        trainer = StackedTrainer(config, train.x.shape[1], [0, 1, 2], torch.device("cpu"), use_fused)
        losses[use_fused] = [tuple(m.tolist()) for m in trainer.train_epoch(train)]
    np.testing.assert_allclose(losses[True][0], losses[False][0], rtol=1e-5)
    assert losses[True][1] == losses[False][1]


def test_full_training_runs_agree_on_both_paths(kernel):
    """Early stopping, checkpoints and dropped seeds included: the same epochs, nearly the same weights."""
    train, val = _sparse_digits(), _sparse_digits(200, seed=1)
    config = TrainConfig(hidden=12, l2=0.001, max_epochs=6, patience=1)
    fused_runs = train_seeds(config, train, val, [0, 1, 2], use_fused=True)
    eager_runs = train_seeds(config, train, val, [0, 1, 2], use_fused=False)
    for a, b in zip(fused_runs, eager_runs):
        assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
        np.testing.assert_allclose(a.history["val_loss"], b.history["val_loss"], rtol=1e-4)
        for name in PARAM_NAMES:
            torch.testing.assert_close(a.params[name], b.params[name], rtol=1e-3, atol=1e-4)


def test_blank_images_train_like_the_reference(kernel):
    """A batch in which every pixel is zero leaves nothing for the products: the biases and the
    penalty still move, as in the reference."""
    train = _sparse_digits(96)
    train.x[:32] = 0.0  # the first batch, in the identity order below, is blank
    config = TrainConfig(hidden=5, l2=0.001, max_epochs=1, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [0], torch.device("cpu"), use_fused=True)
    params = [trainer.params[k] for k in PARAM_NAMES]
    order = torch.arange(96).view(1, -1)
    kernel.train_epoch(x=train.x, masks=kernel.pixel_masks(train.x), labels=train.y, perms=order, params=params,
                       velocity=trainer.optimizer.velocity, batch_size=32, lr=1e-3, rho=0.9, epsilon=1e-7, l2=0.001)
    expected = {k: v.clone().requires_grad_(True) for k, v in init_params(train.x.shape[1], 5, 0).items()}
    optimizer = torch.optim.RMSprop(list(expected.values()), lr=1e-3, alpha=0.9, eps=1e-7)
    reference_train_epoch(expected, optimizer, train, order[0], config)
    for name, value in zip(PARAM_NAMES, params):
        torch.testing.assert_close(value[0], expected[name].detach(), rtol=1e-4, atol=1e-5)


def test_pixel_masks_mark_the_non_zero_pixels(kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 37, generator=g)  # 37 pixels: two full runs of 16 and a partial one
    x[torch.rand(50, 37, generator=g) < 0.6] = 0.0
    masks = kernel.pixel_masks(x).numpy().view(np.uint16)
    bits = np.unpackbits(masks.view(np.uint8).reshape(50, -1), axis=1, bitorder="little")[:, :37]
    np.testing.assert_array_equal(bits.astype(bool), x.numpy() != 0)


def test_kernel_rejects_inputs_it_cannot_train_on(kernel):
    train = _sparse_digits(64)
    config = TrainConfig(hidden=4)
    trainer = StackedTrainer(config, train.x.shape[1], [0], torch.device("cpu"), use_fused=True)
    good = {"x": train.x, "masks": kernel.pixel_masks(train.x), "labels": train.y,
            "perms": torch.randperm(64).view(1, -1), "params": [trainer.params[k] for k in PARAM_NAMES],
            "velocity": trainer.optimizer.velocity, "batch_size": 32, "lr": 1e-3, "rho": 0.9, "epsilon": 1e-7,
            "l2": 0.0}
    bad = [("x must be a contiguous float32", {"x": train.x.double()}),
           ("masks must be pixel_masks", {"masks": good["masks"][:10]}),
           (r"labels must lie in \[0, 10\)", {"labels": train.y + 5}),
           ("perms must index rows of x", {"perms": good["perms"] + 1}),
           ("hidden.kernel must be a contiguous float32",
            {"params": [good["params"][0].transpose(1, 2), *good["params"][1:]]})]
    for message, change in bad:
        with pytest.raises(RuntimeError, match=message):
            kernel.train_epoch(**{**good, **change})
    with pytest.raises(TypeError):  # one way in: by keyword
        kernel.train_epoch(*good.values())


def _no_compiler(variant="native"):
    raise fused.KernelUnavailable("g++: command not found")


def test_a_failed_build_falls_back_to_the_eager_step_with_one_warning(fresh_fused, monkeypatch):
    monkeypatch.setattr(fused, "build", _no_compiler)
    with pytest.warns(UserWarning, match="g\\+\\+: command not found.*eager"):
        trainer = StackedTrainer(TrainConfig(hidden=8), 10, [0], torch.device("cpu"))
    assert not trainer.use_fused and "g++" in fused.unavailable_reason()
    train, val = _sparse_digits(200), _sparse_digits(100, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the second trainer falls back in silence
        config = TrainConfig(hidden=8, max_epochs=2, early_stopping=False, keep="final")
        result = train_seeds(config, train, val, [0])[0]
    assert result.epochs_run == 2


def test_asking_for_the_kernel_where_it_cannot_be_had_is_an_error(fresh_fused, monkeypatch):
    monkeypatch.setattr(fused, "build", _no_compiler)
    with pytest.raises(fused.KernelUnavailable, match="cannot be had: g\\+\\+: command not found"):
        StackedTrainer(TrainConfig(hidden=8), 10, [0], torch.device("cpu"), use_fused=True)
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    with pytest.raises(fused.KernelUnavailable, match="switched off by MNIST_STUDY_FUSED=0"):
        StackedTrainer(TrainConfig(hidden=8), 10, [0], torch.device("cpu"), use_fused=True)


def test_the_environment_switch_turns_the_kernel_off(fresh_fused, monkeypatch):
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # switched off on purpose: nothing to warn about
        trainer = StackedTrainer(TrainConfig(hidden=4), 10, [0], torch.device("cpu"))
    assert not trainer.use_fused and fused.unavailable_reason() == "switched off by MNIST_STUDY_FUSED=0"
