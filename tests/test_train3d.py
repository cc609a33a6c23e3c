"3D training end to end through the command line: segthor-train --model unet3d on a tiny phantom tree"
import sys
import pandas as pd, pytest, torch
from segthor_nb import cli, models
from segthor_nb.data_fix import write_phantom
from segthor_nb.train3d import train3d

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp('t3d')/'tree', n_patients=4, shape=(32, 32), n_slices=16, seed=0, n_test=1, progress=False)


def test_cli_3d_names_are_the_registry():
    assert set(cli.MODELS_3D) == set(models.MODEL_REGISTRY_3D)


def train_cli(monkeypatch, *args):
    "Run segthor-train's command line in this process"
    monkeypatch.setattr(sys, 'argv', ['segthor-train', *map(str, args)])
    return cli.segthor_train()


def test_segthor_train_routes_unet3d(tree, tmp_path, monkeypatch, capsys):
    dest = tmp_path/'run'
    train_cli(monkeypatch, '--model', 'unet3d', '--source_dir', tree, '--dest', dest, '--patch_size', 16, 16, 16, '--retains', 1, '--epochs', 1,
              '--steps_per_epoch', 2, '--num_workers', 0, '--model_cfg', '{"size": "tiny"}', '--no-progress')
    assert 'best epoch 1: 3D Dice' in capsys.readouterr().out
    assert (dest/'best.safetensors').exists() and list(pd.read_csv(dest/'history.csv').epoch) == [1]
    assert type(models.load_run(dest)).__name__ == 'UNet3D'


def test_bad_3d_flag_is_one_line(tree, tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as e: train_cli(monkeypatch, '--model', 'unet3d', '--source_dir', tree, '--dest', tmp_path/'r', '--patch_size', 16, 16)
    assert str(e.value).startswith('segthor-train: --patch_size') and '\n' not in str(e.value)


def test_loss_goes_down_on_a_tiny_overfit(tree, tmp_path):
    res = train3d(source_dir=str(tree), dest=str(tmp_path/'fit'), retains=1, model_cfg={'size': 'tiny'}, patch_size=[16, 16, 16], epochs=4,
                  steps_per_epoch=4, lr=1e-2, augment=False, use_scheduler=False, num_workers=0, progress=False, val_every=4)
    losses = [r['train_loss'] for r in res['history']]
    assert losses[-1] < 0.8*losses[0], losses
