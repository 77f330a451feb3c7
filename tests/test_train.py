"""The training step: Keras' RMSprop, agreement with autograd, seeds stacked, Keras' callbacks."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mnist_study.training import fused
from mnist_study.training.model import MLP, MODELS, glorot_uniform, init_params, model_class
from mnist_study.training.optimizers import OPTIMIZERS, KerasRMSprop, RMSpropConfig, make_optimizer
from mnist_study.training.trainer import (
    Split,
    StackedTrainer,
    TrainConfig,
    _SeedState,
    evaluate_stack,
    reference_train_epoch,
    train_seeds,
)


# Every test that trains runs on both CPU paths: the compiled epoch and the eager step. use_fused=True
# insists on the kernel (an error where it cannot be had), so the "fused" runs are skipped, not
# quietly eager, where there is no compiler.
_NO_KERNEL = fused.missing_tools()
PATHS = pytest.mark.parametrize("use_fused", [
    pytest.param(True, id="fused", marks=pytest.mark.skipif(bool(_NO_KERNEL), reason=f"{_NO_KERNEL}")),
    pytest.param(False, id="eager"),
])


def _data(n=640, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, d, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0  # learnable: input k lights up for class k
    return Split(x, y)


def test_rmsprop_step_matches_keras_formula_by_hand():
    w = torch.tensor([1.0, -2.0, 0.5])
    g = torch.tensor([0.1, -0.3, 0.0])
    opt = KerasRMSprop([w], RMSpropConfig(lr=1e-3, rho=0.9, epsilon=1e-7))
    opt.step([g])
    # v = 0.9 * 0 + 0.1 * g^2 ; w -= 1e-3 * g / (sqrt(v) + 1e-7)   (epsilon outside the root)
    v = [0.1 * 0.01, 0.1 * 0.09, 0.0]
    expected = [1.0 - 1e-3 * 0.1 / (math.sqrt(v[0]) + 1e-7),
                -2.0 - 1e-3 * -0.3 / (math.sqrt(v[1]) + 1e-7),
                0.5]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    # a second step uses the decayed accumulator
    opt.step([g])
    v2 = 0.9 * v[0] + 0.1 * 0.01
    assert w[0].item() == pytest.approx(expected[0] - 1e-3 * 0.1 / (math.sqrt(v2) + 1e-7), rel=1e-6)


def test_glorot_uniform_limits():
    w = glorot_uniform(784, 130, torch.Generator().manual_seed(0))
    limit = math.sqrt(6 / (784 + 130))
    assert w.abs().max() <= limit and w.abs().max() > 0.95 * limit
    assert abs(w.mean().item()) < 0.01


@PATHS
@pytest.mark.parametrize("l2", [0.0, 0.001])
def test_fast_step_agrees_with_autograd_and_torch_rmsprop(l2, use_fused):
    train = _data()
    config = TrainConfig(hidden=7, l2=l2, max_epochs=2, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [3, 4], torch.device("cpu"), use_fused)
    for seed_index, seed in enumerate([3, 4]):
        reference = {k: v.clone().requires_grad_(True) for k, v in init_params(train.x.shape[1], 7, seed).items()}
        optimizer = torch.optim.RMSprop(list(reference.values()), lr=1e-3, alpha=0.9, eps=1e-7)
        shuffle = torch.Generator().manual_seed(seed + 1_000_003)  # the trainer's shuffling stream
        for _ in range(2):
            reference_train_epoch(reference, optimizer, train, torch.randperm(len(train), generator=shuffle), config)
        if seed_index == 0:
            for _ in range(2):
                trainer.train_epoch(train)
        for name, value in reference.items():
            torch.testing.assert_close(trainer.params[name][seed_index], value.detach(), rtol=1e-4, atol=1e-5)


@PATHS
def test_stacked_seeds_equal_seeds_trained_alone(use_fused):
    train, val = _data(), _data(200, seed=1)
    config = TrainConfig(hidden=5, l2=0.001, max_epochs=8, patience=2)
    together = train_seeds(config, train, val, [0, 1, 2], use_fused=use_fused)
    for result in together:
        alone = train_seeds(config, train, val, [result.seed], use_fused=use_fused)[0]
        assert alone.epochs_run == result.epochs_run and alone.best_epoch == result.best_epoch
        for name in alone.params:
            torch.testing.assert_close(alone.params[name], result.params[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.history["val_loss"], result.history["val_loss"], rtol=1e-5)


@PATHS
def test_training_is_deterministic_and_learns(use_fused):
    train, val = _data(), _data(200, seed=1)
    config = TrainConfig(hidden=16, max_epochs=15, early_stopping=False, keep="final")
    a, b, c = (train_seeds(config, train, val, [seed], use_fused=use_fused)[0] for seed in (0, 0, 1))
    assert a.history == b.history
    assert a.history != c.history
    assert a.history["val_accuracy"][-1] > 0.6  # chance is 0.1


def _state_after(val_losses, val_accs, patience=2, keep="best_val_loss", max_epochs=200):
    state = _SeedState(0, torch.Generator())
    config = TrainConfig(hidden=1, patience=patience, keep=keep, max_epochs=max_epochs)
    kept = []
    for epoch, (loss, acc) in enumerate(zip(val_losses, val_accs), start=1):
        if state.stopped:
            break
        if state.record(epoch, 0.0, 0.0, loss, acc, config):
            kept.append(epoch)
    return state, kept


def test_early_stopping_follows_keras():
    # accuracy improves at epochs 1, 2, then not at 3 and 4 (equal is no improvement) -> stop after 4
    state, kept = _state_after([1.0, 0.8, 0.7, 0.75, 0.6, 0.5], [0.5, 0.6, 0.6, 0.59, 0.9, 0.95])
    assert state.stopped and len(state.history["loss"]) == 4
    assert kept == [1, 2, 3]  # the checkpoint follows val_loss, not accuracy


def test_final_weights_kept_without_early_stopping():
    state = _SeedState(0, torch.Generator())
    config = TrainConfig(hidden=1, early_stopping=False, keep="final", max_epochs=3)
    kept = [e for e in (1, 2, 3) if state.record(e, 0, 0, 1.0, 0.5, config)]
    assert kept == [3] and state.stopped


def test_evaluate_stack_matches_cross_entropy_plus_penalty():
    split = _data(300)
    params = {k: v.unsqueeze(0) for k, v in init_params(split.x.shape[1], 6, 0).items()}
    loss, acc = evaluate_stack(params, split, l2=0.01)
    hidden = torch.relu(split.x @ params["hidden.kernel"][0] + params["hidden.bias"][0])
    logits = hidden @ params["output.kernel"][0] + params["output.bias"][0]
    expected = torch.nn.functional.cross_entropy(logits, split.y) + 0.01 * params["hidden.kernel"].pow(2).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert acc.item() == pytest.approx((logits.argmax(1) == split.y).float().mean().item())


@PATHS
def test_epoch_metrics_are_keras_running_averages(use_fused):
    """With a learning rate of 0 the weights stay put, so Keras' batch-averaged epoch loss and
    accuracy must equal a full pass: this checks the bookkeeping, short last batch included."""
    train = _data(650)  # 20 full batches and one of 10
    config = TrainConfig(hidden=6, l2=0.01, optimizer=RMSpropConfig(lr=0.0))
    trainer = StackedTrainer(config, train.x.shape[1], [0, 1], torch.device("cpu"), use_fused)
    loss, accuracy = trainer.train_epoch(train)
    full_loss, full_accuracy = evaluate_stack(trainer.params, train, l2=0.01)
    torch.testing.assert_close(loss.double(), full_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(accuracy, full_accuracy)


def test_optimisers_and_models_are_registered_by_name():
    assert OPTIMIZERS["rmsprop"] is KerasRMSprop and KerasRMSprop.config_class is RMSpropConfig
    assert RMSpropConfig().kind == "rmsprop"
    assert model_class("mlp") is MODELS["mlp"] is MLP
    for name, value in MLP.init_params(12, 5, seed=3).items():
        assert torch.equal(value, init_params(12, 5, seed=3)[name])
    assert model_class("cnn") is MLP  # a CNN is its convolutional stem and then an MLP
    with pytest.raises(ValueError, match="unknown model 'rnn'; expected one of mlp, cnn"):
        StackedTrainer(TrainConfig(hidden=4, model="rnn"), 10, [0], torch.device("cpu"), use_fused=False)
    with pytest.raises(ValueError, match="unknown optimiser 'adam'; expected one of rmsprop"):
        make_optimizer([torch.zeros(3)], _SGDConfig(kind="adam"))


@dataclass(frozen=True, kw_only=True)
class _SGDConfig:
    kind: str = "sgd"
    lr: float = 0.05


class _SGD:
    """Plain SGD: what adding an optimiser takes (this class and one registration)."""

    config_class = _SGDConfig

    def __init__(self, params, config):
        self.params, self.config = params, config

    def step(self, grads, penalty=0.0):
        if penalty:
            grads[0].add_(self.params[0], alpha=penalty)
        torch._foreach_add_(self.params, grads, alpha=-self.config.lr)

    def keep(self, index):
        pass


def test_a_registered_optimiser_trains_like_its_torch_counterpart(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "sgd", _SGD)
    train = _data()
    config = TrainConfig(hidden=7, l2=0.001, optimizer=_SGDConfig())
    trainer = StackedTrainer(config, train.x.shape[1], [3], torch.device("cpu"))
    assert isinstance(trainer.optimizer, _SGD) and not trainer.use_fused  # the kernel is RMSprop's
    trainer.train_epoch(train)
    reference = {k: v.clone().requires_grad_(True) for k, v in init_params(train.x.shape[1], 7, 3).items()}
    optimizer = torch.optim.SGD(list(reference.values()), lr=0.05)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(3 + 1_000_003))
    reference_train_epoch(reference, optimizer, train, perm, config)
    for name, value in reference.items():
        torch.testing.assert_close(trainer.params[name][0], value.detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="trains the mlp with rmsprop only"):
        StackedTrainer(config, train.x.shape[1], [3], torch.device("cpu"), use_fused=True)
