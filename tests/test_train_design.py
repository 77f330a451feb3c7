"""The design space beyond the paper's network: depth, activations, initialisers, dropout, losses,
optimisers, schedules, stopping rules, standardisation and per-epoch inputs, on tiny synthetic data.

The general path (general.py) is held to the plain way (autograd, torch's own losses, torch.optim)
and every optimiser to torch.optim; the paper's configs keep their own paths (test_train.py).
"""

import math

import numpy as np
import json

import pytest
import torch

from mnist_study.errors import RunError
from mnist_study.training import fused
from mnist_study.training.config import AdamConfig, ScheduleConfig, SGDConfig, TrainConfig
from mnist_study.training.evaluate import evaluate
from mnist_study.training.general import CHUNK_STEPS, reference_epoch
from mnist_study.training.losses import per_example, targets
from mnist_study.training.model import MLP, init_params
from mnist_study.training.network import (ACTIVATIONS, INITIALIZERS, init_network, param_names, penalised_kernels)
from mnist_study.training.optimizers import (OPTIMIZERS, SGD, Adam, AdamW, KerasRMSprop, fused_kernels_for,
                                              make_optimizer)
from mnist_study.training.schedules import lr_multiplier
from mnist_study.training.trainer import (DROPOUT_SEED_OFFSET, SHUFFLE_SEED_OFFSET, Split, StackedTrainer, _SeedState,
                                          evaluate_stack, train_seeds)

CPU = torch.device("cpu")
_NO_KERNEL = fused.missing_tools()


def _data(n=320, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, d, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0  # learnable: input k lights up for class k
    return Split(x, y)


def _torch_optimizer(params, o):
    if o.kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.rho, eps=o.epsilon)
    if o.kind == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    cls = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=o.betas, eps=o.epsilon, weight_decay=o.weight_decay)


def _reference_masks(generator, n, config):
    """The dropout masks one seed draws in an epoch, as general.py documents it: uniforms (steps, B, H)
    per layer, CHUNK_STEPS steps at a time, a unit kept (x 1 / (1 - rate)) where uniform >= rate."""
    bs, rates = config.batch_size, config.dropout or (0.0,) * len(config.layers)
    n_steps = -(-n // bs)
    drawn = [[] for _ in rates]
    for first in range(0, n_steps, CHUNK_STEPS):
        steps = min(CHUNK_STEPS, n_steps - first)
        for layer, (h, rate) in enumerate(zip(config.layers, rates)):
            if rate:
                u = torch.rand(steps, bs, h, generator=generator).view(-1, h)
                drawn[layer].append(torch.where(u >= rate, 1.0 / (1.0 - rate), 0.0))
    return [torch.cat(m) if m else None for m in drawn]


# ----------------------------------------------------------------------------------- optimisers

OPTIMISER_CASES = {
    "sgd": (SGDConfig(lr=0.1), dict(lr=0.1)),
    "sgd_momentum": (SGDConfig(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.9)),
    "sgd_nesterov": (SGDConfig(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (AdamConfig(lr=0.01), dict(lr=0.01)),
    "adam_decay": (AdamConfig(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1)),
    "adamw": (AdamConfig(kind="adamw", lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("fused_kernel", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("case", list(OPTIMISER_CASES))
def test_each_optimiser_matches_torch_optim_on_every_slice_of_the_stack(case, fused_kernel):
    config, torch_kwargs = OPTIMISER_CASES[case]
    torch_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.kind]
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 7, 5), (4, 1, 5)]
    start = [torch.randn(*s, generator=g) for s in shapes]
    if fused_kernel and not fused_kernels_for(start):
        pytest.skip("this PyTorch has no fused optimiser kernels for the CPU")
    ours = OPTIMIZERS[config.kind]([p.clone() for p in start], config, fused=fused_kernel)
    # torch.optim on each slice: its default per-tensor formulas, or its fused kernels
    variant = {"fused": True} if fused_kernel else {"foreach": False}
    refs = [[torch.nn.Parameter(p[i].clone()) for p in start] for i in range(4)]
    optims = [torch_class(r, **torch_kwargs, **variant) for r in refs]
    kept = list(range(4))
    for step in range(7):
        if step == 3:  # seeds 1 and 3 stop: the others go on, their state intact
            kept = [0, 2]
            ours.keep(torch.tensor(kept))
            ours.params = [p.index_select(0, torch.tensor(kept)) for p in ours.params]
        if step == 5:  # a schedule changes the learning rate
            ours.lr *= 0.5
            for o in optims:
                o.param_groups[0]["lr"] *= 0.5
        grads = [torch.randn(len(kept), *s[1:], generator=g) for s in shapes]
        ours.step([x.clone() for x in grads])
        for row, seed in enumerate(kept):
            for ref, grad in zip(refs[seed], grads):
                ref.grad = grad[row].clone()
            optims[seed].step()
    for row, seed in enumerate(kept):
        for ours_p, ref in zip(ours.params, refs[seed]):
            if fused_kernel and config.kind == "sgd":  # its vector and scalar loops round a hair apart
                torch.testing.assert_close(ours_p[row], ref.detach(), rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(ours_p[row], ref.detach())


def test_optimisers_are_registered_with_their_settings():
    assert OPTIMIZERS == {"rmsprop": KerasRMSprop, "sgd": SGD, "adam": Adam, "adamw": AdamW}
    assert isinstance(make_optimizer([torch.zeros(2, 3)], AdamConfig(kind="adamw")), AdamW)
    with pytest.raises(ValueError, match="'sgd' by SGDConfig, not AdamConfig"):
        make_optimizer([torch.zeros(3)], AdamConfig(kind="sgd"))
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        SGD([torch.zeros(3)], SGDConfig(nesterov=True))


# ------------------------------------------------------------------------------ losses, activations

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_output_gradients_are_autograds_of_torchs_losses(smoothing):
    """The formulas general.py uses: (softmax - target) / B for cross-entropy, 2 (outputs - target) / B
    for the summed squared error, the target smoothed to (1 - e) one-hot + e / C."""
    g = torch.Generator().manual_seed(1)
    outputs = (torch.randn(6, 10, generator=g) * 3).requires_grad_(True)
    y = torch.randint(0, 10, (6,), generator=g)
    t = targets(y, 10, smoothing)
    ce = torch.nn.functional.cross_entropy(outputs, y, label_smoothing=smoothing)
    (grad,) = torch.autograd.grad(ce, outputs)
    torch.testing.assert_close(grad, (torch.softmax(outputs, -1) - t).detach() / 6)
    assert per_example(outputs, y, "cross_entropy", smoothing).mean().item() == pytest.approx(ce.item(), rel=1e-6)
    se = torch.nn.functional.mse_loss(outputs, t, reduction="sum") / 6
    (grad,) = torch.autograd.grad(se, outputs)
    torch.testing.assert_close(grad, 2 * (outputs - t).detach() / 6)
    assert per_example(outputs, y, "squared_error", smoothing).mean().item() == pytest.approx(se.item(), rel=1e-6)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_derivatives_are_autograds(name):
    act = ACTIVATIONS[name]
    z = torch.linspace(-4, 4, 101).view(1, 101).requires_grad_(True)
    h = act.function(z)
    upstream = torch.rand(1, 101, generator=torch.Generator().manual_seed(2))
    (expected,) = torch.autograd.grad(h, z, upstream)
    out = torch.empty(1, 101)
    act.forward(z.detach(), out)
    assert torch.equal(out, h.detach())
    assert torch.equal(act.backward(upstream.clone(), z.detach(), out), expected)
    if name == "gelu":  # torch's exact GELU, not the tanh approximation
        torch.testing.assert_close(h, z * 0.5 * (1 + torch.erf(z / math.sqrt(2))))


# --------------------------------------------------------------------------------- initialisers

def test_one_glorot_uniform_layer_is_the_papers_init():
    for name, value in init_network(30, (7,), seed=5).items():
        assert torch.equal(value, init_params(30, 7, seed=5)[name])


@pytest.mark.parametrize("init, std, bound", [
    ("glorot_uniform", math.sqrt(2 / (400 + 300)), math.sqrt(6 / (400 + 300))),
    ("he_uniform", math.sqrt(2 / 400), math.sqrt(6 / 400)),
    ("glorot_normal", math.sqrt(2 / (400 + 300)), 2 * math.sqrt(2 / (400 + 300)) / 0.87962566103423978),
    ("he_normal", math.sqrt(2 / 400), 2 * math.sqrt(2 / 400) / 0.87962566103423978),
    ("lecun_normal", math.sqrt(1 / 400), 2 * math.sqrt(1 / 400) / 0.87962566103423978),
])
def test_initialisers_have_keras_spread_and_bounds(init, std, bound):
    params = init_network(400, (300,), seed=0, init=init)
    w = params["hidden.kernel"]
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert abs(w.mean().item()) < 0.02 * std
    assert w.abs().max().item() <= bound * (1 + 1e-6) and w.abs().max().item() > 0.95 * bound
    assert not params["hidden.bias"].any() and not params["output.bias"].any()
    assert set(INITIALIZERS) >= {init}


def test_layers_are_drawn_from_the_input_to_the_output():
    """One generator, layer by layer: a deeper network's first kernels are a shallower one's."""
    shallow, deep = init_network(12, (6,), 3, "he_normal"), init_network(12, (6, 5), 3, "he_normal")
    assert torch.equal(shallow["hidden.kernel"], deep["hidden.kernel"])
    assert not torch.equal(init_network(12, (6,), 4, "he_normal")["hidden.kernel"], shallow["hidden.kernel"])


# ---------------------------------------------------------------------------- the general path

DESIGNS = {
    "depth0_squared_sgd_nesterov": TrainConfig(layers=(), loss="squared_error", l2=0.01, l2_scope="all",
                                               optimizer=SGDConfig(lr=0.05, momentum=0.9, nesterov=True)),
    "tanh_smoothed_adam_l2_all": TrainConfig(layers=(9, 7), activation="tanh", label_smoothing=0.1, l2=1e-3,
                                             l2_scope="all", optimizer=AdamConfig(lr=1e-2)),
    "gelu_dropout_adamw": TrainConfig(layers=(8, 6, 5), activation="gelu", dropout=(0.2, 0.0, 0.5), init="he_normal",
                                      optimizer=AdamConfig(kind="adamw", weight_decay=0.01)),
    "sigmoid_depth4_squared_smoothed": TrainConfig(layers=(8, 6, 5, 4), activation="sigmoid", loss="squared_error",
                                                   label_smoothing=0.2, l2=0.01,
                                                   optimizer=SGDConfig(lr=0.1, momentum=0.5)),
    "relu_dropout_rmsprop_cosine": TrainConfig(hidden=12, dropout=(0.3,), l2=1e-3, batch_size=7, max_epochs=3,
                                               schedule=ScheduleConfig(kind="cosine", warmup_epochs=1)),
}


@pytest.mark.parametrize("design", list(DESIGNS))
def test_general_path_agrees_with_autograd_and_torch_optim(design):
    config = DESIGNS[design]
    train = _data()
    trainer = StackedTrainer(config, 20, [3, 4], CPU)
    assert not trainer.paper and not trainer.use_fused
    for _ in range(3):
        trainer.train_epoch(train)
    for index, seed in enumerate([3, 4]):
        start = init_network(20, config.layers, seed, config.init)
        reference = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        optimizer = _torch_optimizer(list(reference.values()), config.optimizer)
        shuffle = torch.Generator().manual_seed(seed + SHUFFLE_SEED_OFFSET)
        dropout = torch.Generator().manual_seed(seed + DROPOUT_SEED_OFFSET)
        for epoch in (1, 2, 3):
            optimizer.param_groups[0]["lr"] = config.optimizer.lr * lr_multiplier(config.schedule, epoch, 3)
            perm = torch.randperm(len(train), generator=shuffle)
            reference_epoch(reference, optimizer, train.x, train.y, perm, config,
                            _reference_masks(dropout, len(train), config))
        for name, value in reference.items():
            torch.testing.assert_close(trainer.params[name][index], value.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
def test_every_depth_has_keras_shaped_stacked_parameters(depth):
    layers = (6, 5, 4, 3)[:depth]
    trainer = StackedTrainer(TrainConfig(layers=layers, activation="tanh"), 20, [0, 1, 2], CPU)
    widths = [20, *layers, 10]
    expected = {}
    for layer, (fan_in, fan_out) in zip(["hidden", "hidden2", "hidden3", "hidden4"][:depth] + ["output"],
                                        zip(widths[:-1], widths[1:])):
        expected[f"{layer}.kernel"] = (3, fan_in, fan_out)
        expected[f"{layer}.bias"] = (3, 1, fan_out)
    assert {k: tuple(v.shape) for k, v in trainer.params.items()} == expected
    assert tuple(expected) == param_names(depth)
    loss, accuracy = trainer.train_epoch(_data(100))
    assert loss.shape == accuracy.shape == (3,) and torch.isfinite(loss).all()
    model = MLP({k: v[0] for k, v in trainer.params.items()}, "tanh")
    hidden, proba = model.hidden_and_proba(np.random.default_rng(0).random((7, 20), dtype=np.float32))
    assert hidden.shape == (7, layers[0] if layers else 0) and proba.shape == (7, 10)
    assert model.hidden_width == (layers[0] if layers else 0) and model.layers == layers and model.n_inputs == 20
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)


def test_a_two_layer_network_learns_a_separable_problem():
    train, val = _data(640), _data(200, seed=1)
    config = TrainConfig(layers=(16, 16), optimizer=AdamConfig(lr=3e-3), max_epochs=12, early_stopping=False,
                         keep="final")
    result = train_seeds(config, train, val, [0])[0]
    assert result.history["val_accuracy"][-1] > 0.9  # chance is 0.1
    assert result.history["loss"][-1] < result.history["loss"][0] / 3


def test_a_seed_trains_alike_alone_and_in_a_stack_dropout_included():
    train, val = _data(), _data(100, seed=1)
    config = TrainConfig(layers=(10, 8), dropout=(0.3, 0.2), activation="relu", optimizer=AdamConfig(), max_epochs=3,
                         early_stopping=False, keep="final")
    stacked = train_seeds(config, train, val, [0, 1, 2])
    alone = train_seeds(config, train, val, [1])[0]
    for name, value in alone.params.items():
        torch.testing.assert_close(stacked[1].params[name], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stacked[1].history["loss"], alone.history["loss"], rtol=1e-5)
    assert not torch.equal(stacked[0].params["hidden.kernel"], stacked[1].params["hidden.kernel"])


def test_dropout_drops_in_training_only():
    """With a learning rate of 0 the weights stay put: the epoch's loss (with dropout) is then not the
    full pass's (without), and the full pass is the network computed plainly."""
    train = _data(330)
    config = TrainConfig(layers=(12,), dropout=(0.5,), optimizer=SGDConfig(lr=0.0))
    trainer = StackedTrainer(config, 20, [0, 1], CPU)
    loss, _ = trainer.train_epoch(train)
    full_loss, full_accuracy = evaluate_stack(trainer.params, train, 0.0, **trainer.loss_settings)
    assert (loss - full_loss).abs().min() > 1e-3
    logits = torch.relu(train.x @ trainer.params["hidden.kernel"][1] + trainer.params["hidden.bias"][1]) \
        @ trainer.params["output.kernel"][1] + trainer.params["output.bias"][1]
    assert full_loss[1].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, train.y).item(), rel=1e-5)
    masks = trainer.general._masks([torch.Generator().manual_seed(0)], CHUNK_STEPS, 32)[0]
    assert set(masks.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)
    assert (masks == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("config", [
    TrainConfig(layers=(12, 9), activation="sigmoid", l2=0.01, loss="squared_error", label_smoothing=0.1,
                optimizer=SGDConfig(lr=0.0)),
    TrainConfig(layers=(12,), activation="gelu", l2=0.01, l2_scope="all", label_smoothing=0.2,
                optimizer=AdamConfig(lr=0.0)),
], ids=["squared_error", "cross_entropy"])
def test_epoch_metrics_are_keras_running_averages_on_the_general_path(config):
    train = _data(330)  # 10 full batches and one of 10
    trainer = StackedTrainer(config, 20, [0, 1], CPU)
    loss, accuracy = trainer.train_epoch(train)
    full_loss, full_accuracy = evaluate_stack(trainer.params, train, config.l2, **trainer.loss_settings)
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(accuracy, full_accuracy)


def test_l2_scope_chooses_the_penalised_kernels():
    assert penalised_kernels(0, "hidden") == ()
    assert penalised_kernels(2, "hidden") == ("hidden.kernel", "hidden2.kernel")
    assert penalised_kernels(2, "all") == ("hidden.kernel", "hidden2.kernel", "output.kernel")
    split = _data(50)
    params = {k: v.unsqueeze(0) for k, v in init_network(20, (6, 5), 0).items()}
    base, _ = evaluate_stack(params, split, 0.0)
    hidden, _ = evaluate_stack(params, split, 0.1)
    every, _ = evaluate_stack(params, split, 0.1, l2_scope="all")
    squares = {k: params[k].double().pow(2).sum().item() for k in ("hidden.kernel", "hidden2.kernel", "output.kernel")}
    assert hidden.item() - base.item() == pytest.approx(0.1 * (squares["hidden.kernel"] + squares["hidden2.kernel"]))
    assert every.item() - base.item() == pytest.approx(0.1 * sum(squares.values()))
    depth0 = {k: v.unsqueeze(0) for k, v in init_network(20, (), 0).items()}
    assert evaluate_stack(depth0, split, 0.1)[0].item() == pytest.approx(evaluate_stack(depth0, split, 0.0)[0].item())


# ----------------------------------------------------------------------------- schedules, stopping

def test_schedule_multipliers():
    constant, warm = ScheduleConfig(), ScheduleConfig(warmup_epochs=3)
    assert [lr_multiplier(constant, e, 10) for e in (1, 5, 10)] == [1.0, 1.0, 1.0]
    assert [lr_multiplier(warm, e, 10) for e in (1, 2, 3, 4, 9)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    step = ScheduleConfig(kind="step", warmup_epochs=1, step_every=2, step_factor=0.5)
    assert [lr_multiplier(step, e, 10) for e in range(1, 8)] == [0.5, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cosine = ScheduleConfig(kind="cosine", warmup_epochs=2)
    values = [lr_multiplier(cosine, e, 10) for e in range(1, 11)]
    assert values[:3] == [1 / 3, 2 / 3, 1.0]
    assert values[6] == pytest.approx(0.5)  # halfway through the 8 epochs after the warm-up
    assert all(a > b for a, b in zip(values[2:], values[3:])) and 0 < values[-1] < 0.05


def test_the_trainer_sets_each_epochs_learning_rate():
    config = TrainConfig(layers=(5,), activation="tanh", optimizer=SGDConfig(lr=0.2),
                         schedule=ScheduleConfig(kind="step", step_every=1, step_factor=0.5))
    trainer = StackedTrainer(config, 20, [0], CPU)
    rates = []
    for _ in range(3):
        trainer.train_epoch(_data(64))
        rates.append(trainer.optimizer.lr)
    assert rates == [0.2, 0.1, 0.05]


def _record(config, val_losses, val_accuracies, train_losses=None):
    state, kept = _SeedState(0, torch.Generator()), []
    train_losses = train_losses or [1.0] * len(val_losses)
    for epoch, row in enumerate(zip(train_losses, val_losses, val_accuracies), start=1):
        if state.stopped:
            break
        if state.record(epoch, row[0], 0.5, row[1], row[2], config):
            kept.append(epoch)
    return state, kept


def test_monitoring_val_loss_stops_when_it_stops_falling():
    config = TrainConfig(hidden=1, monitor="val_loss", patience=2, keep="best_val_loss")
    # val_loss falls at 1, 2, not at 3 (equal) and 4: stop after 4, although accuracy kept rising
    state, kept = _record(config, [1.0, 0.8, 0.8, 0.9, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert state.stopped and len(state.history["loss"]) == 4 and kept == [1, 2]


def test_keep_best_val_accuracy_keeps_strictly_higher_accuracy():
    config = TrainConfig(hidden=1, early_stopping=False, keep="best_val_accuracy", max_epochs=5)
    state, kept = _record(config, [1.0, 0.5, 0.4, 0.3, 0.2], [0.5, 0.7, 0.7, 0.6, 0.8])
    assert kept == [1, 2, 5] and state.stopped


def test_stop_at_train_loss_stops_once_reached():
    config = TrainConfig(hidden=1, early_stopping=False, keep="final", stop_at_train_loss=0.25)
    state, kept = _record(config, [1.0] * 6, [0.5] * 6, train_losses=[0.9, 0.5, 0.25, 0.1, 0.1, 0.1])
    assert state.stopped and len(state.history["loss"]) == 3 and kept == [3]
    # and in training: a threshold every epoch meets ends it after one
    results = train_seeds(TrainConfig(layers=(6,), activation="tanh", stop_at_train_loss=100.0, keep="final"),
                          _data(64), _data(32, seed=1), [0, 1])
    assert [r.epochs_run for r in results] == [1, 1] and [r.best_epoch for r in results] == [1, 1]


def test_the_paper_path_follows_the_new_stopping_rules_too():
    config = TrainConfig(hidden=6, stop_at_train_loss=100.0, keep="best_val_accuracy")
    trainer = StackedTrainer(config, 20, [0], CPU, use_fused=False)
    assert trainer.paper
    assert trainer.fit(_data(64), _data(32, seed=1))[0].epochs_run == 1


def test_a_huge_learning_rate_diverges_on_the_general_path_recorded_not_raised():
    config = TrainConfig(layers=(6, 6), loss="squared_error", max_epochs=4, optimizer=SGDConfig(lr=1e6))
    results = train_seeds(config, _data(), _data(60, seed=1), [0, 1])
    for result in results:
        assert result.diverged_epoch == 1 and result.epochs_run == 0 and result.best_epoch == 0
        for name, value in init_network(20, (6, 6), result.seed).items():
            torch.testing.assert_close(result.params[name], value)


# ------------------------------------------------------------------------- which path, config checks

def test_the_paper_family_keeps_its_paths_and_everything_else_takes_the_general_one():
    assert StackedTrainer(TrainConfig(layers=(7,), l2=0.001, keep="final", monitor="val_loss"), 20, [0], CPU,
                          use_fused=False).paper
    assert not StackedTrainer(TrainConfig(hidden=7, optimizer=SGDConfig()), 20, [0], CPU).paper
    with pytest.raises(ValueError, match="trains the mlp with rmsprop only.*activation 'tanh'"):
        StackedTrainer(TrainConfig(hidden=7, activation="tanh"), 20, [0], CPU, use_fused=True)


@pytest.mark.parametrize("changes, key", [
    (dict(layers=(4, 4), dropout=(0.1,)), "dropout"),
    (dict(layers=(4, 4, 4, 4, 4)), "layers"),
    (dict(hidden=4, activation="softplus"), "activation"),
    (dict(hidden=4, keep="best"), "keep"),
    (dict(hidden=4, label_smoothing=1.0), "label_smoothing"),
])
def test_a_config_out_of_range_is_refused_naming_the_field(changes, key):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{key} = "):
        StackedTrainer(TrainConfig(**changes), 20, [0], CPU)


def test_the_general_path_keeps_its_work_on_the_training_device():
    meta = torch.device("meta")
    train = Split(torch.empty(70, 20, device=meta), torch.empty(70, dtype=torch.long, device=meta))
    config = TrainConfig(layers=(6, 5), dropout=(0.2, 0.2), activation="gelu", optimizer=AdamConfig(), l2=0.01)
    trainer = StackedTrainer(config, 20, [0, 1], meta)
    loss, accuracy = trainer.train_epoch(train)
    for t in (loss, accuracy, *trainer.params.values(), *trainer.optimizer.exp_avg):
        assert t.device == meta


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_general_path_on_cuda_agrees_with_the_cpu():
    config = TrainConfig(layers=(16, 8), dropout=(0.2, 0.1), activation="tanh", loss="squared_error", l2=1e-3,
                         l2_scope="all", optimizer=AdamConfig(), max_epochs=3, early_stopping=False, keep="final")
    results = {}
    for device in ("cpu", "cuda"):
        train, val = _data(), _data(60, seed=1)
        results[device] = train_seeds(config, Split(train.x.to(device), train.y.to(device)),
                                      Split(val.x.to(device), val.y.to(device)), [0, 1], device=device)
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        for name, value in cpu.params.items():
            torch.testing.assert_close(cuda.params[name], value, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ standardisation, saving, evaluation

def test_a_deep_tanh_network_with_standardisation_saves_and_loads(tmp_path):
    raw_train, raw_val = _data(200), _data(60, seed=1)
    mean, scale = raw_train.x.mean(0), raw_train.x.std(0)

    def std(split):
        return Split((split.x - mean) / scale, split.y)

    config = TrainConfig(layers=(8, 6), activation="tanh", optimizer=AdamConfig(), max_epochs=2, early_stopping=False,
                         keep="final")
    result = train_seeds(config, std(raw_train), std(raw_val), [0], standardize=(mean, scale))[0]
    assert torch.equal(result.params["input.mean"], mean.view(1, -1))
    model = MLP(result.params, "tanh")
    proba = model.predict_proba(raw_val.x.numpy())  # raw inputs: the network standardises them
    stacked = {k: v.unsqueeze(0) for k, v in result.params.items() if not k.startswith("input.")}
    _, expected = evaluate_stack(stacked, std(raw_val), 0.0, activation="tanh")  # accuracy on standardised
    assert (proba.argmax(1) == raw_val.y.numpy()).mean() == pytest.approx(expected.item())
    model.save(tmp_path / "model.safetensors")
    loaded = MLP.load(tmp_path / "model.safetensors")
    assert loaded.activation == "tanh" and loaded.layers == (8, 6) and set(loaded.params) == set(model.params)
    np.testing.assert_array_equal(loaded.predict_proba(raw_val.x.numpy()), proba)
    np.testing.assert_allclose(loaded.hidden_and_proba(raw_val.x.numpy())[0],
                               np.tanh((((raw_val.x - mean) / scale) @ result.params["hidden.kernel"]
                                        + result.params["hidden.bias"]).numpy()), rtol=1e-5, atol=1e-6)


def test_files_without_metadata_are_paper_networks_and_others_are_named(tmp_path):
    from safetensors.torch import save_file

    paper = init_params(20, 5, 0)
    save_file(paper, str(tmp_path / "old.safetensors"))  # as networks were saved before metadata
    old = MLP.load(tmp_path / "old.safetensors")
    assert old.activation == "relu" and old.layers == (5,)
    deep = {k: v for k, v in init_network(20, (5, 4), 0).items() if k != "hidden2.kernel"}
    save_file(deep, str(tmp_path / "deep.safetensors"),
              metadata={"mnist_study": json.dumps({"layers": "5,4", "activation": "tanh"})})
    with pytest.raises(RunError, match="not a saved network: it lacks hidden2.kernel"):
        MLP.load(tmp_path / "deep.safetensors")
    save_file({"weights": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RunError, match="lacks hidden.kernel, hidden.bias, output.kernel, output.bias"):
        MLP.load(tmp_path / "other.safetensors")
    save_file(paper, str(tmp_path / "garbled.safetensors"), metadata={"mnist_study": "{not json"})
    with pytest.raises(RunError, match="its metadata is not valid"):
        MLP.load(tmp_path / "garbled.safetensors")


def test_a_saved_network_is_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders several metadata keys differently from process to process: there is one."""
    import subprocess
    import sys

    code = ("import sys; from mnist_study.training.model import MLP; from mnist_study.training.network import "
            "init_network; MLP(init_network(6, (4, 3), 0), 'tanh').save(sys.argv[1])")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == (tmp_path / "c").read_bytes()


def test_evaluate_reports_the_trained_loss_and_the_scoped_penalty():
    g = torch.Generator().manual_seed(0)
    params = init_network(20, (6, 5), 0)
    params["output.bias"] = torch.randn(1, 10, generator=g)
    model = MLP(params, "sigmoid")
    split = _data(40)
    x, y = split.x.numpy(), split.y.numpy()
    splits = {"train": (x, y), "test": (x, y)}
    outputs = torch.from_numpy(model.outputs(x)).double()
    squares = sum(params[k].double().pow(2).sum().item() for k in ("hidden.kernel", "hidden2.kernel", "output.kernel"))
    se = evaluate(model, splits, 0.1, loss="squared_error", l2_scope="all")
    expected = (outputs - torch.nn.functional.one_hot(split.y, 10).double()).pow(2).sum(1).mean().item()
    assert se.loss["test"] == pytest.approx(expected + 0.1 * squares, rel=1e-9)
    ce = evaluate(model, splits, 0.1)  # the paper's defaults: cross-entropy, hidden kernels
    hidden_squares = squares - params["output.kernel"].double().pow(2).sum().item()
    expected = torch.nn.functional.cross_entropy(outputs, split.y).item() + 0.1 * hidden_squares
    assert ce.loss["test"] == pytest.approx(expected, rel=1e-5)
    smoothed = evaluate(model, splits, label_smoothing=0.1)
    expected = torch.nn.functional.cross_entropy(outputs, split.y, label_smoothing=0.1).item()
    assert smoothed.loss["test"] == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(se.test_proba, model.predict_proba(x))


# ------------------------------------------------------------------------------------ epoch inputs

def _epoch_inputs(train, epochs):
    """Each epoch its own inputs, blank in pixels of their own (those the compiled epoch skips, as
    shifted images leave a blank border)."""
    g = torch.Generator().manual_seed(9)
    return {e: train.x * (torch.rand(train.x.shape[1], generator=g) > 0.4) for e in range(1, epochs + 1)}


@pytest.mark.parametrize("config, use_fused", [
    pytest.param(TrainConfig(layers=(7, 5), dropout=(0.2, 0.0), optimizer=AdamConfig(), max_epochs=3,
                             early_stopping=False, keep="final"), None, id="general"),
    pytest.param(TrainConfig(hidden=7, max_epochs=3, early_stopping=False, keep="final"), False, id="eager"),
    pytest.param(TrainConfig(hidden=7, max_epochs=3, early_stopping=False, keep="final"), True, id="fused",
                 marks=pytest.mark.skipif(bool(_NO_KERNEL), reason=f"{_NO_KERNEL}")),
])
def test_epoch_inputs_replace_the_training_inputs_each_epoch(config, use_fused):
    train, val = _data(), _data(60, seed=1)
    inputs = _epoch_inputs(train, 3)
    given = train_seeds(config, train, val, [0, 1], use_fused=use_fused, epoch_inputs=inputs.__getitem__)
    by_hand = StackedTrainer(config, 20, [0, 1], CPU, use_fused)
    for epoch in (1, 2, 3):
        by_hand.train_epoch(Split(inputs[epoch], train.y))
    plain = train_seeds(config, train, val, [0, 1], use_fused=use_fused)
    buffer = torch.empty_like(train.x)  # one tensor written over each epoch: cached pixel masks must not go stale
    in_place = train_seeds(config, train, val, [0, 1], use_fused=use_fused,
                           epoch_inputs=lambda e: buffer.copy_(inputs[e]))
    for index in (0, 1):
        for name, value in given[index].params.items():
            torch.testing.assert_close(value, by_hand.params[name][index], rtol=1e-5, atol=1e-6)
            assert torch.equal(in_place[index].params[name], value)
        assert not torch.equal(given[index].params["output.kernel"], plain[index].params["output.kernel"])
    with pytest.raises(ValueError, match=r"epoch_inputs\(1\) gave \(320, 19\)"):
        train_seeds(config, train, val, [0], use_fused=use_fused, epoch_inputs=lambda e: train.x[:, :19])
