"""DDP under `torchrun --nproc_per_node 2 $(which segthor-train)` with gloo on CPU: the same final weights and validation
scores as one process at the same global batch.

The model is SAMed in its tiny test configuration: LayerNorm only, no BatchNorm (SyncBatchNorm has no CPU
implementation, so a BatchNorm model normalises each process's half batch separately and legitimately differs) and no
dropout. The loss is CE, a mean over pixels, whose gradient averaged over two equal halves is the full batch's; SAMed's
own loss sums Dice terms over the whole batch and would not decompose. The optimizer is SGD: Adam divides by the root of
the gradient's second moment, which turns float rounding in gradients that are zero in exact arithmetic (attention key
biases: softmax ignores them) into steps of ±lr, so its runs agree only to ~lr/10 on those few parameters."""
import os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from segthor_nb.models import read_state_dict
from segthor_nb.train import tiny_phantom

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp('train_ddp')/'phantom', n_patients=4, size=32, n_slices=12)


def flags(data, dest):
    return ['--dataset', 'PHANTOM', '--data_root', str(data), '--dest', str(dest), '--model', 'samed', '--model_cfg', '{"size": "tiny"}',
            '--epochs', '2', '--batch_size', '4', '--optimizer', 'sgd', '--lr', '5e-2', '--loss', 'ce', '--use_scheduler', '--use_sampler', '--augment',
            '--deterministic', '--num_workers', '0', '--no-progress']


def test_two_processes_match_one(data, tmp_path):
    one = subprocess.run([str(BIN/'segthor-train'), *flags(data, tmp_path/'one')], capture_output=True, text=True, env=ENV)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(BIN/'segthor-train'), *flags(data, tmp_path/'two')],
                         capture_output=True, text=True, env=ENV)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count('best epoch') == 1                               # only rank 0 reports (and writes)
    a, b = read_state_dict(tmp_path/'one'/'last.safetensors'), read_state_dict(tmp_path/'two'/'last.safetensors')
    assert a.keys() == b.keys()
    moved = [k for k in a if 'lora' in k]
    assert moved and any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in moved)   # LoRA B starts at 0: training moved it
    for k in a: torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    ha, hb = (pd.read_csv(d/'history.csv') for d in (tmp_path/'one', tmp_path/'two'))
    cols = [c for c in ha if c.startswith(('train_loss', 'val_loss', 'dice'))]
    np.testing.assert_allclose(hb[cols].to_numpy(), ha[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    assert not (tmp_path/'two'/'.last.next.safetensors').exists()
