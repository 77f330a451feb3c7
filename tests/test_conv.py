"""The convolutional model ("cnn"): its stem, its training epoch, saving and loading, and study files."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_study.errors import StudyError
from mnist_study.studies import parse_study
from mnist_study.training.config import AdamConfig, TrainConfig
from mnist_study.training.conv import conv_channels, n_features, stem
from mnist_study.training.conv_epoch import ConvEpoch
from mnist_study.training.model import MLP, stack_params
from mnist_study.training.network import (count_parameters, first_pre_activation, forward, init_network,
                                          trained_names)
from mnist_study.training.optimizers import make_optimizer
from mnist_study.training.trainer import Split, evaluate_stack, train_seeds


def _cnn(seed: int, channels=(3, 5), layers=(7,), kernel_size=3) -> dict[str, torch.Tensor]:
    return init_network(784, layers, seed, "he_uniform", conv_channels=channels, kernel_size=kernel_size)


def _reference_outputs(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One network written the plain way: torch.nn.functional's conv2d, relu, max_pool2d, linear."""
    h = x.reshape(-1, 1, 28, 28)
    for layer in ("conv1", "conv2"):
        w = params[f"{layer}.kernel"]
        h = F.max_pool2d(F.relu(F.conv2d(h, w, params[f"{layer}.bias"], padding=w.shape[-1] // 2)), 2)
    h = F.relu(h.flatten(1) @ params["hidden.kernel"] + params["hidden.bias"])
    return h @ params["output.kernel"] + params["output.bias"]


def test_a_cnn_has_the_shapes_and_parameter_count_of_its_layers():
    params = _cnn(0, channels=(16, 32), layers=(128,), kernel_size=5)
    assert params["conv1.kernel"].shape == (16, 1, 5, 5) and params["conv2.kernel"].shape == (32, 16, 5, 5)
    assert n_features((16, 32)) == 32 * 7 * 7 and params["hidden.kernel"].shape == (32 * 49, 128)
    expected = (16 * 25 + 16) + (32 * 16 * 25 + 32) + (32 * 49 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters({k: v.shape for k, v in params.items()}) == expected
    assert trained_names(params)[:4] == ("conv1.kernel", "conv1.bias", "conv2.kernel", "conv2.bias")
    # He-uniform over the fan-in Cin * k * k: variance 2 / fan_in
    assert params["conv2.kernel"].var().item() == pytest.approx(2 / (16 * 25), rel=0.1)


def test_the_stem_of_a_stack_is_each_seeds_own_network():
    nets = [_cnn(seed) for seed in (0, 1, 2)]
    stacked = stack_params(nets)
    x = torch.rand(3, 40, 784)  # each seed its own images
    features = stem(stacked, x)
    for s, net in enumerate(nets):
        torch.testing.assert_close(features[s], stem(net, x[s]), rtol=1e-5, atol=1e-5)
    _, outputs = forward(stacked, x[0])  # the same images for every seed
    for s, net in enumerate(nets):
        torch.testing.assert_close(outputs[s], _reference_outputs(net, x[0]), rtol=1e-4, atol=1e-5)


def test_evaluation_in_chunks_equals_one_pass():
    net = _cnn(4)
    x = torch.rand(2600, 784)  # more than one evaluation chunk
    with torch.no_grad():
        chunked = stem(net, x)
    with torch.enable_grad():
        whole = stem(net, x)
    torch.testing.assert_close(chunked, whole.detach())


def test_one_epoch_of_a_stack_equals_each_seed_trained_the_plain_way():
    config = TrainConfig(layers=(7,), model="cnn", conv=(3, 5), kernel_size=3, init="he_uniform", batch_size=16,
                         optimizer=AdamConfig(lr=1e-2), l2=1e-3).validate()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    nets = [_cnn(seed) for seed in (0, 1)]
    perms = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
    stacked = stack_params(nets)
    names = trained_names(stacked)
    optimizer = make_optimizer([stacked[k] for k in names], config.optimizer)
    loss, accuracy = ConvEpoch(config, 784, torch.device("cpu")).run(stacked, optimizer, x, y, perms, [])
    for s, net in enumerate(nets):
        params = {k: v.clone().requires_grad_(True) for k, v in net.items()}
        reference = torch.optim.Adam(list(params.values()), lr=1e-2)
        losses = []
        for start in range(0, 64, 16):
            idx = perms[s, start:start + 16]
            batch_loss = F.cross_entropy(_reference_outputs(params, x[idx]), y[idx])
            batch_loss = batch_loss + 1e-3 * params["hidden.kernel"].pow(2).sum()
            reference.zero_grad()
            batch_loss.backward()
            reference.step()
            losses.append(batch_loss.item())
        for name in names:
            torch.testing.assert_close(stacked[name][s], params[name].detach(), rtol=1e-4, atol=1e-5)
        assert loss[s].item() == pytest.approx(np.mean(losses), rel=1e-5)
        assert 0.0 <= accuracy[s].item() <= 1.0


def test_a_small_cnn_learns_and_saves_and_loads(tmp_path):
    # bars on different rows per class (as conftest's synthetic digits): a CNN separates them in a few epochs
    g = np.random.default_rng(0)
    labels = g.integers(0, 10, 600)
    images = g.uniform(0, 0.2, (600, 28, 28)).astype(np.float32)
    for i, k in enumerate(labels):
        images[i, 2 * k + 3:2 * k + 6, 6:20] += 0.8
    x, y = torch.as_tensor(images.reshape(600, 784)), torch.as_tensor(labels)
    train, validation = Split(x[:500], y[:500]), Split(x[500:], y[500:])
    config = TrainConfig(layers=(16,), model="cnn", conv=(4, 8), kernel_size=3, init="he_uniform", batch_size=32,
                         optimizer=AdamConfig(lr=3e-3), dropout=(0.2,), max_epochs=6, early_stopping=False,
                         keep="final")
    results = train_seeds(config, train, validation, seeds=[0, 1])
    assert [len(r.history["loss"]) for r in results] == [6, 6]
    assert results[0].history["loss"][-1] < results[0].history["loss"][0]
    assert not torch.equal(results[0].params["conv1.kernel"], results[1].params["conv1.kernel"])
    model = MLP(results[0].params)
    assert (model.predict(images[500:].reshape(100, 784)) == labels[500:]).mean() > 0.8
    _, accuracy = evaluate_stack(stack_params([results[0].params]), validation, 0.0)
    assert accuracy.item() == pytest.approx((model.predict(images[500:].reshape(100, 784)) == labels[500:]).mean())

    model.save(tmp_path / "model.safetensors")
    loaded = MLP.load(tmp_path / "model.safetensors")
    assert loaded.conv == (4, 8) and loaded.n_inputs == 784 and loaded.layers == (16,)
    np.testing.assert_array_equal(loaded.predict_proba(images[:50].reshape(50, 784)),
                                  model.predict_proba(images[:50].reshape(50, 784)))
    # the report's pattern ascent climbs the first Dense layer through the convolutions
    pre = first_pre_activation(loaded.params, torch.as_tensor(images[:5].reshape(5, 784)))
    assert pre.shape == (5, 16) and torch.isfinite(pre).all()
    assert conv_channels(loaded.params) == (4, 8)


def test_a_cnn_with_its_stem_missing_is_refused_on_loading(tmp_path):
    from safetensors.torch import load_file, save_file

    from mnist_study.errors import RunError

    MLP(_cnn(0)).save(tmp_path / "model.safetensors")
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["conv2.bias"]
    save_file(tensors, tmp_path / "model.safetensors", metadata=MLP(_cnn(0)).metadata())
    with pytest.raises(RunError, match="conv2.bias"):
        MLP.load(tmp_path / "model.safetensors")


def _study(extra: str) -> str:
    return f'name = "s"\n[[experiment]]\nname = "c"\nhidden = 8\nconv = [4]\n{extra}\n'


def test_a_study_declares_a_cnn():
    experiment = parse_study(_study("kernel_size = 3")).experiments[0]
    config = experiment.train_config()
    assert (config.model, config.conv, config.kernel_size) == ("cnn", (4,), 3)
    assert experiment.shape_text == "conv4/8"
    assert "model 'cnn'" in " ".join(config.paper_differences())
    assert parse_study('name = "s"\n[[experiment]]\nname = "m"\nhidden = 8\n').experiments[0].train_config().model \
        == "mlp"


@pytest.mark.parametrize("extra, message", [
    ('frontend = { kind = "pca", variance = 0.9 }', "sees the image itself"),
    ("kernel_size = 4", "must be odd"),
    ("conv = [4, 4, 4, 4]", "conv"),
])
def test_a_cnn_study_that_cannot_be_built_is_refused(extra, message):
    text = _study(extra).replace("conv = [4]\n", "") if extra.startswith("conv") else _study(extra)
    with pytest.raises(StudyError, match=message):
        parse_study(text)


def test_train_config_checks_the_stem():
    with pytest.raises(ValueError, match="conv"):
        TrainConfig(hidden=8, model="cnn").validate()
    with pytest.raises(ValueError, match="conv"):
        TrainConfig(hidden=8, conv=(4,)).validate()  # channels without model "cnn"
    with pytest.raises(ValueError, match="1 to 3 positive channel counts"):
        TrainConfig(hidden=8, model="cnn", conv=(2, 2, 2, 2)).validate()
    with pytest.raises(ValueError, match="odd"):
        TrainConfig(hidden=8, model="cnn", conv=(2,), kernel_size=2).validate()
    assert math.isclose(TrainConfig(hidden=8, model="cnn", conv=(2, 2, 2)).validate().kernel_size, 5)
