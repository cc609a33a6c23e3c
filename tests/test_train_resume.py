"""`segthor-train` killed with SIGKILL in the middle of an epoch, then resumed: the final weights equal those of an
uninterrupted run bit for bit, and no file the kill left in the destination is half-written."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest, torch
from PIL import Image
from segthor_nb.models import read_state_dict
from segthor_nb.train import tiny_phantom

EXE = str(Path(sys.executable).parent/'segthor-train')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp('train_resume')/'phantom', n_patients=4, size=48, n_slices=12)


def args(data, dest):
    """ENet with everything that has state or randomness: scheduler, sampler, augmentation, dropout, BatchNorm, AdamW, a
    persistent loader worker (whose iterator must not draw from the global generator)"""
    return [EXE, '--dataset', 'PHANTOM', '--data_root', str(data), '--dest', str(dest), '--epochs', '4', '--batch_size', '2',
            '--lr', '2e-3', '--loss', 'dce', '--use_scheduler', '--use_sampler', '--augment', '--deterministic',
            '--gradient_accumulation_steps', '2', '--clip_grad', '--num_workers', '1', '--no-progress']


def state_epoch(dest):
    try: return torch.load(dest/'last_state.pt', weights_only=True)['epoch']
    except (FileNotFoundError, RuntimeError, EOFError): return 0


def check_whole(dest, temps_allowed=False):
    """Every file in dest reads completely with the reader of its kind; the only exception, right after a kill, is an
    atomic write's temporary file (.<name>.<random>.tmp<suffix>), which never replaced anything and the next start deletes"""
    temps = list(dest.glob('.*.tmp*'))
    assert temps_allowed or not temps, temps
    for f in set(dest.iterdir()) - set(temps):
        if f.suffix == '.safetensors': assert read_state_dict(f)
        elif f.suffix == '.pt': torch.load(f, weights_only=True)
        elif f.suffix == '.json': json.loads(f.read_text())
        elif f.suffix == '.csv': pd.read_csv(f)
        elif f.suffix == '.png': Image.open(f).load()
        else: raise AssertionError(f"unexpected file {f.name}")


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data, tmp_path):
    full = subprocess.run(args(data, tmp_path/'full'), capture_output=True, text=True, env=ENV)
    assert full.returncode == 0, full.stderr
    epoch_s = pd.read_csv(tmp_path/'full'/'history.csv').seconds.median()

    killed = tmp_path/'killed'
    p = subprocess.Popen(args(data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    t0 = time.time()
    while state_epoch(killed) < 1:
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() - t0 < 120, "no checkpoint of epoch 1 after 120 s"
        time.sleep(.05)
    time.sleep(.4*epoch_s)                                    # well inside epoch 2
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert 1 <= state_epoch(killed) < 4
    check_whole(killed, temps_allowed=True)

    again = subprocess.run(args(data, killed), capture_output=True, text=True, env=ENV)   # no --resume: refused
    assert again.returncode != 0 and '--resume' in again.stderr and len(again.stderr.strip().splitlines()) == 1

    resumed = subprocess.run(args(data, killed) + ['--resume'], capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    for name in ('last.safetensors', 'best.safetensors'):
        a, b = read_state_dict(tmp_path/'full'/name), read_state_dict(killed/name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    ha, hb = (pd.read_csv(d/'history.csv').drop(columns='seconds') for d in (tmp_path/'full', killed))
    pd.testing.assert_frame_equal(ha, hb)
    assert len(ha) == 4 and (ha.train_loss > 0).all()
    check_whole(killed)
