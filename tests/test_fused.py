"""The compiled CPU epoch (kernels/fused_epoch.cpp) against the reference and the eager step."""

import shutil

import numpy as np
import pytest
import torch

from mnist_study.training import fused
from mnist_study.training.model import PARAM_NAMES, init_params
from mnist_study.training.trainer import Split, StackedTrainer, TrainConfig, reference_train_epoch, train_seeds


@pytest.fixture(scope="module")
def kernel():
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler here: training takes the eager step (tested in test_train.py)")
    module = fused.load()
    assert module is not None, f"the fused kernel should build on this machine: {fused.unavailable_reason()}"
    return module


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
    train = _sparse_digits() if inputs == "sparse" else Split(torch.rand(500, 37), torch.randint(0, 10, (500,)))
    config = TrainConfig(hidden=hidden, l2=0.001, max_epochs=2, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [3, 4], torch.device("cpu"), use_fused=True)
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
    kernel.train_epoch(train.x, kernel.pixel_masks(train.x), train.y, order, params, trainer.optimizer.velocity,
                       32, 1e-3, 0.9, 1e-7, 0.001)
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
    params = [trainer.params[k] for k in PARAM_NAMES]
    masks = kernel.pixel_masks(train.x)
    perm = torch.randperm(64).view(1, -1)
    with pytest.raises(RuntimeError, match="x must be a contiguous float32"):
        kernel.train_epoch(train.x.double(), masks, train.y, perm, params, trainer.optimizer.velocity,
                           32, 1e-3, 0.9, 1e-7, 0.0)
    with pytest.raises(RuntimeError, match="masks must be pixel_masks"):
        kernel.train_epoch(train.x, masks[:10], train.y, perm, params, trainer.optimizer.velocity,
                           32, 1e-3, 0.9, 1e-7, 0.0)
    with pytest.raises(RuntimeError, match=r"labels must lie in \[0, 10\)"):
        kernel.train_epoch(train.x, masks, train.y + 5, perm, params, trainer.optimizer.velocity,
                           32, 1e-3, 0.9, 1e-7, 0.0)
    with pytest.raises(RuntimeError, match="perms must index rows of x"):
        kernel.train_epoch(train.x, masks, train.y, perm + 1, params, trainer.optimizer.velocity,
                           32, 1e-3, 0.9, 1e-7, 0.0)
    with pytest.raises(RuntimeError, match="hidden.kernel must be a contiguous float32"):
        kernel.train_epoch(train.x, masks, train.y, perm, [params[0].transpose(1, 2), *params[1:]],
                           trainer.optimizer.velocity, 32, 1e-3, 0.9, 1e-7, 0.0)


def test_a_failed_build_falls_back_to_the_eager_step(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_unavailable", None)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    with pytest.warns(UserWarning, match="g\\+\\+: command not found.*eager"):
        assert fused.load() is None
    assert "g++" in fused.unavailable_reason()
    train, val = _sparse_digits(200), _sparse_digits(100, seed=1)
    result = train_seeds(TrainConfig(hidden=8, max_epochs=2, early_stopping=False, keep="final"), train, val, [0])[0]
    assert result.epochs_run == 2


def test_the_environment_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    trainer = StackedTrainer(TrainConfig(hidden=4), 10, [0], torch.device("cpu"))
    assert not trainer.use_fused
