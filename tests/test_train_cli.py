"""`segthor-train` as a user meets it: documented flags under the study's names,
one-line errors, a TOY2 run with ShallowNet, and nnU-Net-style augmentation on [-1, 1] images (`--use_wandb`:
tests/test_train_wandb.py)."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd, pytest
from segthor_nb.slicing import write_toy2
from segthor_nb.train import tiny_phantom

EXE = str(Path(sys.executable).parent/'segthor-train')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run(*args, env=ENV):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp('train_cli')/'phantom', n_patients=3, size=32, n_slices=8)


def test_help_lists_the_study_flags():
    r = run('--help')
    assert r.returncode == 0
    for flag in ('--gradient-accumulation-steps', '--use-scheduler', '--use-sampler', '--augment-nnunet', '--ce-lambda',
                 '--from-checkpoint', '--finetune-crf', '--clip-grad', '--use-wandb', '--resume', '--overwrite', '--bf16'):
        assert flag in r.stdout, flag
    assert 'micro-batches per optimizer step' in r.stdout and 'sgd-wd' in r.stdout


def in_process(monkeypatch, capsys, *args)->str:
    "What `segthor-train ARGS` prints on stderr when it exits, run in this process (no start-up cost)"
    import segthor_nb.cli as cli
    monkeypatch.setattr(sys, 'argv', ['segthor-train', *map(str, args)])
    with pytest.raises(SystemExit) as e: cli.segthor_train()
    return capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else '')


def test_one_line_errors(tmp_path, data, monkeypatch, capsys):
    r = run('--dataset', 'PHANTOM', '--data_root', tmp_path/'nothing', '--dest', tmp_path/'d', '--num_workers', 0)  # a real process
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert 'no sliced PHANTOM train split' in r.stderr and 'segthor-slice' in r.stderr
    err = in_process(monkeypatch, capsys, '--dataset', 'TOY2', '--mode', 'partial', '--dest', tmp_path/'d')
    assert 'needs SEGTHOR' in err and len(err.strip().splitlines()) == 1
    assert 'invalid choice' in in_process(monkeypatch, capsys, '--optimizer', 'lion')
    err = in_process(monkeypatch, capsys, '--data_root', data, '--dataset', 'PHANTOM', '--model', 'samed', '--model_cfg',
                     '{"size": "tiny", "depth": 3}', '--dest', tmp_path/'e')
    assert 'unknown option(s) depth' in err and len(err.strip().splitlines()) == 1


def test_toy2_with_shallownet(tmp_path):
    toy = write_toy2(tmp_path/'toy2', n_train=24, n_val=6, size=32, radius=6)
    r = run('--dataset', 'TOY2', '--data_root', toy, '--dest', tmp_path/'t', '--epochs', 2, '--use_sampler', '--num_workers', 1,
            '--deterministic')
    assert r.returncode == 0, r.stderr
    h = pd.read_csv(tmp_path/'t'/'history.csv')
    assert list(h.epoch) == [1, 2] and {'dice3d_foreground', 'dice2d_foreground'} <= set(h.columns)
    cfg = json.loads((tmp_path/'t'/'config.json').read_text())
    assert (cfg['model'], cfg['batch_size'], cfg['loss'], cfg['seed']) == ('shallow', 2, 'ce', 2024)


def test_nnunet_augmentation_on_normalized_images(tmp_path, data):
    r = run('--dataset', 'PHANTOM', '--data_root', data, '--dest', tmp_path/'n', '--epochs', 1, '--batch_size', 4,
            '--augment_nnunet', '--normalize', '--mode', 'partial', '--loss', 'gdl', '--num_workers', 0)
    assert r.returncode == 0, r.stderr
    assert 'best epoch 1' in r.stdout and pd.read_csv(tmp_path/'n'/'history.csv').train_loss.gt(0).all()


@pytest.mark.slow
def test_compile_on_cpu(tmp_path, data):
    "torch.compile through the CLI on CPU (a C++ compiler is needed; ~1 min): checkpoints carry no `_orig_mod.` prefix"
    from segthor_nb.models import read_state_dict
    r = run('--dataset', 'PHANTOM', '--data_root', data, '--dest', tmp_path/'c', '--epochs', 1, '--batch_size', 4, '--model', 'shallow',
            '--compile', '--num_workers', 0, '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    keys = list(read_state_dict(tmp_path/'c'/'last.safetensors'))
    assert keys and not [k for k in keys if '_orig_mod' in k or k.startswith('module.')]
