"""`--use_wandb` as a user meets it, offline, on a CI-size phantom. The runs are read back with wandb's own reader of
its `.wandb` files (`wandb leet inspect --json`), not by grepping: the logged history is `history.csv`, the logged
config is `config.json`, the overlays, the curves, the best epoch's Dice table and the best checkpoint are there. A
fake `WANDB_API_KEY` reaches no file, no log and no executed notebook; nothing of wandb lands in the home folder; and
`--resume` continues the same W&B run."""
import dataclasses, json, os, subprocess, sys
from pathlib import Path
import matplotlib, numpy as np, pandas as pd, pytest
from segthor_nb.core import TrainConfig
from segthor_nb.train import Trainer, tiny_phantom, wandb_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = 'wk-fake-' + '0123456789abcdef'*2          # the length of a real key; never valid
ORGANS = ['esophagus', 'heart', 'trachea', 'aorta']


def user_env(home:Path, **kw)->dict:
    "The environment of a user whose home is `home`, without any wandb setting, plus `kw`"
    env = {k: v for k, v in os.environ.items() if not k.startswith(('WANDB_', 'SEGTHOR_WANDB_', 'XDG_'))}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, 'HOME': str(home), 'MPLCONFIGDIR': matplotlib.get_configdir(), 'OMP_NUM_THREADS': '1',
            'PATH': f"{BIN}{os.pathsep}{env.get('PATH', '')}", **kw}


def segthor_train(*args, env:dict):
    return subprocess.run([str(BIN/'segthor-train'), *map(str, args)], capture_output=True, text=True, env=env)


def wandb_runs(dest:Path)->list:
    "[(run folder, records)] of `dest`'s offline W&B runs, oldest first, read by wandb itself"
    out = []
    for f in sorted(dest.glob('wandb/offline-run-*/run-*.wandb')):
        r = subprocess.run([str(BIN/'wandb'), 'leet', 'inspect', '--json', str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out.append((f.parent, [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]))
    return out


def of_type(recs:list, kind:str)->list: return [r[kind] for r in recs if r['type'] == kind]
def history(recs:list)->pd.DataFrame: return pd.DataFrame([h['item'] for h in of_type(recs, 'history')])
def run_id(recs:list)->str: return of_type(recs, 'run')[0]['run_id']


def assert_same_history(logged:pd.DataFrame, csv:Path):
    want = pd.read_csv(csv)
    assert len(logged) == len(want) and set(want.columns) <= set(logged.columns), (logged.columns, want.columns)
    np.testing.assert_allclose(logged[want.columns].to_numpy(float), want.to_numpy(float), rtol=1e-12)


def no_key_in(folder:Path)->int:
    "The number of files under `folder`, none of which holds the key"
    files = [f for f in folder.rglob('*') if f.is_file()]
    assert not [f for f in files if KEY.encode() in f.read_bytes()]
    return len(files)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp('wandb')/'phantom', n_patients=3, size=32, n_slices=8)


def flags(data, dest, epochs=2): return ('--dataset', 'PHANTOM', '--data_root', data, '--dest', dest, '--epochs', epochs,
                                         '--batch_size', 4, '--model', 'shallow', '--num_workers', 0, '--use_wandb')


def test_offline_run_logs_the_history_images_table_and_checkpoint(tmp_path, data):
    dest, home = tmp_path/'run', tmp_path/'home'
    env = user_env(home, WANDB_API_KEY=KEY, WANDB_MODE='offline', SEGTHOR_WANDB_IMAGES_EVERY='1', SEGTHOR_WANDB_ARTIFACT='1')
    r = segthor_train(*flags(data, dest), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert KEY not in r.stdout + r.stderr                                  # the logs
    assert no_key_in(dest/'wandb') > 10 and no_key_in(dest); no_key_in(home)   # the wandb folder, the run folder, the home
    assert not [p for p in home.rglob('*') if 'wandb' in p.name]          # wandb wrote nothing outside the run folder
    (folder, recs), = wandb_runs(dest)
    assert_same_history(h := history(recs), dest/'history.csv')
    config = of_type(recs, 'run')[0]['config']['update']
    assert {k: v for k, v in config.items() if k != '_wandb'} == json.loads((dest/'config.json').read_text())
    assert h['overlays._type'].tolist() == ['image-file']*2 and h['overlays.caption'][0].startswith('epoch 1:')
    for p in (*h['overlays.path'], h['curves.path'].iloc[-1]): assert (folder/'files'/p).stat().st_size > 1000
    table = json.loads((folder/'files'/h['best_val_dice.path'].iloc[-1]).read_text())
    best = max(json.loads((dest/'history.json').read_text()), key=lambda row: row['dice3d_fg'])   # the first best, as train's
    assert table['columns'] == ['organ', 'dice3d', 'dice2d'] and [row[0] for row in table['data']][:4] == ORGANS
    np.testing.assert_allclose([row[1] for row in table['data']], [best[f'dice3d_{o}'] for o in ORGANS] + [best['dice3d_fg']])
    art, = [a for a in of_type(recs, 'artifact') if a['type'] == 'model']
    f, = art['manifest']['contents']
    assert f['path'] == 'best.safetensors' and Path(f['local_path']).is_relative_to(dest/'wandb')
    assert Path(f['local_path']).read_bytes() == (dest/'best.safetensors').read_bytes()
    assert json.loads((dest/'wandb'/'segthor_run.json').read_text()) == dict(id=run_id(recs), epoch=2)


def test_resume_continues_the_same_wandb_run(tmp_path, data, monkeypatch):
    "A run stopped after epoch 1 (here, in this process), resumed through the CLI without a key: offline, same run id"
    dest = tmp_path/'run'
    for k in ('WANDB_API_KEY', 'WANDB_MODE'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('WANDB_SILENT', 'true')
    tr = Trainer(TrainConfig(dataset='PHANTOM', data_root=str(data), dest=str(dest), epochs=2, batch_size=4, model='shallow',
                             num_workers=0, use_wandb=True, progress=False))
    with wandb_run(tr): tr.fit(until=1)
    r = segthor_train(*flags(data, dest), '--resume', env=user_env(tmp_path/'home'))
    assert r.returncode == 0, r.stderr[-3000:]
    (_, first), (_, second) = wandb_runs(dest)
    assert run_id(first) == run_id(second) == json.loads((dest/'wandb'/'segthor_run.json').read_text())['id']
    assert history(first).epoch.tolist() == [1] and history(second).epoch.tolist() == [2]
    assert_same_history(pd.concat([history(first), history(second)], ignore_index=True), dest/'history.csv')


def test_wandb_asked_for_on_resume_logs_the_earlier_epochs(tmp_path, data, monkeypatch):
    "A run started without wandb and resumed with it: one W&B run holding every epoch"
    dest = tmp_path/'run'
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('WANDB_SILENT', 'true')
    cfg = TrainConfig(dataset='PHANTOM', data_root=str(data), dest=str(dest), epochs=2, batch_size=4, model='shallow',
                      num_workers=0, progress=False, seed=3)
    Trainer(cfg).fit(until=1)
    tr = Trainer(dataclasses.replace(cfg, use_wandb=True)); tr.resume()
    with wandb_run(tr): tr.fit()
    (_, recs), = wandb_runs(dest)
    assert_same_history(history(recs), dest/'history.csv')


@pytest.mark.slow
def test_papermill_notebook_never_holds_the_key(tmp_path):
    "nbs/04_train.ipynb through papermill with use_wandb (it runs the whole notebook: ~1-2 min; the CLI tests cover the code)"
    dest = tmp_path/'runs'/'x'; dest.mkdir(parents=True)
    env = user_env(tmp_path/'home', WANDB_API_KEY=KEY, WANDB_MODE='offline')
    r = subprocess.run([str(BIN/'papermill'), str(ROOT/'nbs'/'04_train.ipynb'), str(dest/'04_train.ipynb'), '--cwd', str(ROOT/'nbs'),
                        '-p', 'dataset', 'PHANTOM', '-p', 'epochs', '2', '-p', 'dest', str(dest),
                        '-y', 'phantom: {n_patients: 3, size: 32, n_slices: 8, retains: 1}', '-y', 'extra: {use_wandb: true}'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert KEY not in r.stdout + r.stderr
    assert no_key_in(dest/'wandb') > 10 and no_key_in(dest); no_key_in(tmp_path/'home')
    (_, recs), = wandb_runs(dest)
    assert_same_history(history(recs), dest/'history.csv')
