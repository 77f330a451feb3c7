"""Training off the CPU: everything stays on the training device.

No GPU is needed for the first test: PyTorch's meta device refuses, as CUDA does, any operation
that mixes its tensors with CPU ones, so an epoch that runs there keeps its work on the device.
The second runs only where CUDA is present (marker `gpu`).
"""

import pytest
import torch

from mnist_study.training.model import PARAM_NAMES
from mnist_study.training.trainer import Split, StackedTrainer, TrainConfig, evaluate_stack, train_seeds


def _data(n, d, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, d, generator=g)
    x[torch.arange(n), y] += 1.0
    return Split(x.to(device), y.to(device))


def test_an_epoch_off_the_cpu_never_touches_cpu_tensors():
    meta = torch.device("meta")
    train = Split(torch.empty(300, 20, device=meta), torch.empty(300, dtype=torch.long, device=meta))
    trainer = StackedTrainer(TrainConfig(hidden=6, l2=0.001), 20, [0, 1], meta)
    assert not trainer.use_fused  # the compiled epoch is for the CPU only
    loss, accuracy = trainer.train_epoch(train)
    val_loss, val_accuracy = evaluate_stack(trainer.params, train, 0.001)
    for t in (loss, accuracy, val_loss, val_accuracy, *trainer.params.values(), *trainer.optimizer.velocity):
        assert t.device == meta
    assert loss.shape == accuracy.shape == (2,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_agrees_with_the_cpu():
    config = TrainConfig(hidden=16, l2=0.001, max_epochs=3, early_stopping=False, keep="final")
    results = {}
    for device in ("cpu", "cuda"):
        train, val = _data(640, 50, device), _data(200, 50, device, seed=1)
        results[device] = train_seeds(config, train, val, [0, 1], device=device)
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        for name in PARAM_NAMES:
            torch.testing.assert_close(cuda.params[name], cpu.params[name], rtol=1e-3, atol=1e-4)
