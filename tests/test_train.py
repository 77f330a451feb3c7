"""The training step: Keras' RMSprop, agreement with autograd, seeds stacked, Keras' callbacks."""

import math

import numpy as np
import pytest
import torch

from mnist_study.model import glorot_uniform, init_params
from mnist_study.optim import KerasRMSprop, RMSpropConfig
from mnist_study.train import (
    Split,
    StackedTrainer,
    TrainConfig,
    _SeedState,
    evaluate_stack,
    reference_train_epoch,
    train_seeds,
)


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


@pytest.mark.parametrize("l2", [0.0, 0.001])
def test_fast_step_agrees_with_autograd_and_torch_rmsprop(l2):
    train = _data()
    config = TrainConfig(hidden=7, l2=l2, max_epochs=2, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [3, 4], torch.device("cpu"))
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


def test_stacked_seeds_equal_seeds_trained_alone():
    train, val = _data(), _data(200, seed=1)
    config = TrainConfig(hidden=5, l2=0.001, max_epochs=8, patience=2)
    together = train_seeds(config, train, val, [0, 1, 2])
    for result in together:
        alone = train_seeds(config, train, val, [result.seed])[0]
        assert alone.epochs_run == result.epochs_run and alone.best_epoch == result.best_epoch
        for name in alone.params:
            torch.testing.assert_close(alone.params[name], result.params[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.history["val_loss"], result.history["val_loss"], rtol=1e-5)


def test_training_is_deterministic_and_learns():
    train, val = _data(), _data(200, seed=1)
    config = TrainConfig(hidden=16, max_epochs=15, early_stopping=False, keep="final")
    a = train_seeds(config, train, val, [0])[0]
    b = train_seeds(config, train, val, [0])[0]
    c = train_seeds(config, train, val, [1])[0]
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


def test_fused_compiled_update_agrees_with_autograd(monkeypatch):
    """The compiled one-pass RMSprop used for wide layers gives the reference's weights."""
    import mnist_study.optim as optim

    monkeypatch.setattr(optim, "FUSE_MIN_NUMEL", 1)
    train = _data(320)
    config = TrainConfig(hidden=7, l2=0.001, max_epochs=1, early_stopping=False, keep="final")
    trainer = StackedTrainer(config, train.x.shape[1], [5], torch.device("cpu"))
    trainer.train_epoch(train)
    assert optim._fused_update, "torch.compile should be available on this machine"
    reference = {k: v.clone().requires_grad_(True) for k, v in init_params(train.x.shape[1], 7, 5).items()}
    optimizer = torch.optim.RMSprop(list(reference.values()), lr=1e-3, alpha=0.9, eps=1e-7)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(5 + 1_000_003))
    reference_train_epoch(reference, optimizer, train, perm, config)
    for name, value in reference.items():
        torch.testing.assert_close(trainer.params[name][0], value.detach(), rtol=1e-4, atol=1e-5)


def test_epoch_metrics_are_keras_running_averages():
    """With a learning rate of 0 the weights stay put, so Keras' batch-averaged epoch loss and
    accuracy must equal a full pass: this checks the bookkeeping, short last batch included."""
    from mnist_study.optim import RMSpropConfig

    train = _data(650)  # 20 full batches and one of 10
    config = TrainConfig(hidden=6, l2=0.01, optimizer=RMSpropConfig(lr=0.0))
    trainer = StackedTrainer(config, train.x.shape[1], [0, 1], torch.device("cpu"))
    loss, accuracy = trainer.train_epoch(train)
    full_loss, full_accuracy = evaluate_stack(trainer.params, train, l2=0.01)
    torch.testing.assert_close(loss.double(), full_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(accuracy, full_accuracy)
