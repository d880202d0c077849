"""Speed settings change how fast, not what: resolved values, layouts, compilation, logging."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from sparse_mu import job as job_module
from sparse_mu import pipeline
from sparse_mu.data.folder import FolderLoader
from sparse_mu.errors import ConfigError
from sparse_mu.fast import prepare_net, resolve_channels_last, resolve_precision
from sparse_mu.models import SmallCNN, resnet20s
from sparse_mu.pruning import Mask, prunable_weights
from sparse_mu.training import Classifier


def test_auto_precision_resolves_on_the_cpu_and_enters_cache_keys_resolved(tiny_cfg, tmp_path):
    job = pipeline.setup(tiny_cfg(), tmp_path / "a")
    assert job.cfg.trainer.precision == "32-true"
    assert job.cfg.fast.channels_last is True
    assert job.cfg.trainer.benchmark is True  # null resolves to "not deterministic"
    explicit = pipeline.setup(tiny_cfg("trainer.precision=32-true"), tmp_path / "b")
    # the base model's cache key sees the resolved value: auto and 32-true share artifacts on a CPU
    assert job_module._without(job.cfg.trainer, "trainer") == job_module._without(explicit.cfg.trainer, "trainer")


def test_precision_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16-mixed"
    assert resolve_precision("auto", torch.device("cpu")) == "32-true"
    assert resolve_precision("16-mixed", torch.device("cuda", 0)) == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "32-true"
    with pytest.raises(ConfigError, match="trainer.precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="fast.channels_last"):
        resolve_channels_last("sometimes")


@pytest.mark.parametrize("make", [lambda: SmallCNN(10, 3, 16), lambda: resnet20s(10, 3, 16)], ids=["small_cnn", "resnet20s"])
def test_channels_last_computes_the_same_step(make):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = prepare_net(make(), channels_last)
        logits = net(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters()])
        with torch.no_grad():
            evaluated = net.eval()(x)
        results.append((logits.detach(), grads, evaluated, job_module._cpu_state(net)))
    (logits0, grads0, eval0, state0), (logits1, grads1, eval1, state1) = results
    torch.testing.assert_close(logits1, logits0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eval1, eval0, rtol=1e-4, atol=1e-5)
    # Summation order differs, so a pre-activation within rounding of zero may take the other side
    # of a ReLU and move a few gradient entries: compare the whole gradient, not each entry.
    assert (grads1 - grads0).norm() <= 1e-2 * grads0.norm()
    assert all(v.is_contiguous() for v in state1.values())  # saved in the standard layout
    assert state1.keys() == state0.keys()


def _fit(job: pipeline.Job, tmp_path, **loop) -> torch.nn.Module:
    net = job.make_net()
    module = Classifier(net, job.data, job.data.train, **{"epochs": 2, "batch_size": 64, "lr": 0.05,
                                                          "rewind_epoch": 0, **loop})
    job.fit(module, "test", None, CSVLogger(tmp_path, name="log", version=""))
    return net


def test_epoch_loss_is_the_mean_of_the_steps_and_logged_once_per_epoch(tiny_cfg, tmp_path, monkeypatch):
    losses: list[float] = []
    step = Classifier.training_step

    def spy(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        losses.append(float(loss))
        return loss

    monkeypatch.setattr(Classifier, "training_step", spy)
    job = pipeline.setup(tiny_cfg("trainer.limit_train_batches=3"), tmp_path / "out")
    _fit(job, tmp_path)
    rows = (tmp_path / "log" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,train/loss" and len(rows) == 3
    for epoch, row in enumerate(rows[1:]):
        assert float(row.split(",")[2]) == pytest.approx(sum(losses[3 * epoch:3 * epoch + 3]) / 3, rel=1e-5)


def test_no_host_read_per_step(tiny_cfg, tmp_path, monkeypatch):
    """Reading a tensor on the host (`.item()`, `float()`, `if t:`, `.cpu()`, ...) waits for a GPU
    to finish; a training loop with a mask, logging, progress and checkpoints must do none per
    step, so the count is the same for 2 and 4 batches per epoch."""
    reads = []
    for name in ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, _n=name, **k: reads.append(_n) or _f(self, *a, **k))
    counts = []
    for batches in (2, 4):
        job = pipeline.setup(tiny_cfg(f"trainer.limit_train_batches={batches}"), tmp_path / f"out{batches}")
        net = job.make_net()
        mask = Mask.from_scores({k: w.detach().abs() for k, w in prunable_weights(net).items()}, 0.9)
        module = Classifier(net, job.data, job.data.train, epochs=2, batch_size=64, lr=0.05, rewind_epoch=0)
        reads.clear()
        job.fit(module, "test", mask, CSVLogger(tmp_path, name=f"log{batches}", version=""), tmp_path / f"ckpt{batches}")
        counts.append(sorted(reads))
    assert counts[0] == counts[1]


def test_folder_loader_pins_memory_for_a_gpu():
    samples, idx = [("a.png", 0)], torch.tensor([0])
    kw = dict(batch_size=1, shuffle=False, transform=None, seed=0, workers=0)
    assert FolderLoader(samples, idx, device=torch.device("cuda", 0), **kw).loader.pin_memory
    assert not FolderLoader(samples, idx, device="cpu", **kw).loader.pin_memory


@pytest.mark.slow
def test_compiled_run_saves_the_eager_state_dict_keys(tiny_cfg, tmp_path):
    keys = {}
    for compiled in (False, True):
        L.seed_everything(0)
        job = pipeline.setup(tiny_cfg(f"fast.compile={str(compiled).lower()}", "trainer.limit_train_batches=2"),
                             tmp_path / str(compiled))
        net = _fit(job, tmp_path / f"log{compiled}", epochs=1)
        keys[compiled] = list(job_module._cpu_state(net))
        assert job.quick_accuracy(net)["test_acc"] >= 0  # the compiled net also evaluates
    assert keys[True] == keys[False]
