"""SIGTERM / SIGUSR1 (a scheduler's stop, SLURM's pre-emption warning) mid-epoch: the loop
finishes its step, checkpoints it and raises Stopped; the resumed run ends with the same
tensors as an uninterrupted one."""
import hashlib
import os
import signal

import pytest
import torch
from conftest import make_vit
from torch.utils.data import DataLoader, TensorDataset

import glora
from glora.run.signals import Stopped
from glora.spaces import Space


class SignalAt:
    """A DataLoader that sends ``signum`` to this process when batch ``at`` of its ``epoch``-th pass is drawn."""

    def __init__(self, loader, signum=None, epoch=2, at=2):
        self.loader, self.signum, self.epoch, self.at, self.passes = loader, signum, epoch, at, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.loader):
            if self.signum is not None and self.passes == self.epoch + 1 and i == self.at:  # pass 0 is the API's loader check
                os.kill(os.getpid(), self.signum)
            yield batch


def data():
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(96, 3, 32, 32, generator=gen), torch.randint(0, 5, (96,), generator=gen)
    return TensorDataset(images, labels)


def checksum(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(run_dir, signum=None):
    torch.manual_seed(0)
    loader = SignalAt(DataLoader(data(), batch_size=16, shuffle=True), signum)  # 6 batches an epoch
    val = DataLoader(data(), batch_size=48)
    return glora.train_supernet(make_vit(), Space.preset("small"), loader, val, epochs=3, lr=3e-3, seed=0, run_dir=run_dir)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_mid_epoch_checkpoints_the_step_and_the_resumed_run_ends_the_same(signum, tmp_path):
    uninterrupted = checksum(train(tmp_path / "whole"))
    with pytest.raises(Stopped, match=rf"stopped by {signal.Signals(signum).name} at epoch 2 step 9, after writing a checkpoint") as stop:
        train(tmp_path / "cut", signum)
    assert stop.value.exit_code == 128 + signum
    assert [p.name for p in (tmp_path / "cut").glob("*-state-*.pt")] == ["supernet-state-0001-step0009.pt"]
    assert not list((tmp_path / "cut").glob("*.tmp*"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))  # handlers given back
    resumed = train(tmp_path / "cut")
    assert checksum(resumed) == uninterrupted
    assert [p.name for p in (tmp_path / "cut").glob("*-state-*.pt")] == ["supernet-state-0003.pt"]
