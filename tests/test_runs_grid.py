"""runs/grid.py, a thin layer over segthor_nb.tune: the study's grid is one named search space (STUDY_GRID), `list`
prints the segthor-tune commands that run it (and the nnU-Net steps), `run` runs the grid and the CRF variants as Optuna
studies on a tiny phantom (a second run runs nothing again), and `aggregate` builds the paper's table from the studies
and the trial folders, with Optuna's figures."""
import json, os, re, shlex, subprocess, sys
from pathlib import Path
import numpy as np, optuna, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT/'runs'/'grid.py'
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}
sys.path.insert(0, str(GRID.parent))
import grid  # noqa: E402


def grid_py(*args, timeout=1800):
    return subprocess.run([sys.executable, str(GRID), *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def blocks(listing):
    "`list` output -> {part: [argv, ...]} (comment lines kept as ['#', text])"
    out, name = {}, None
    for line in listing.splitlines():
        if m := re.match(r'## (\S+?):? ', line): name = m[1]; out[name] = []
        elif name and line.startswith('# '): out[name].append(['#', line[2:]])
        elif name and line.strip(): out[name].append(shlex.split(line))
    return out


def tune_args(argv):
    "A printed segthor-tune command, parsed by segthor-tune's own parser"
    from segthor_nb.cli import segthor_tune
    from segthor_nb.core import parser_of
    assert argv[0] == 'segthor-tune'
    return vars(parser_of(segthor_tune.__wrapped__).parse_args(argv[1:]))


def test_list_prints_the_tune_commands(tmp_path):
    r = grid_py('list', '--preset', 'ci', '--runs_dir', tmp_path)
    assert r.returncode == 0, r.stderr
    got = blocks(r.stdout)
    assert list(got) == ['grid', 'crf', 'nnunet_2d']
    (space,), (cmd,) = [json.loads(c[1]) for c in got['grid'] if c[0] == '#'], [c for c in got['grid'] if c[0] != '#']
    assert space['space'] == grid.STUDY_GRID and space['sampler'] == 'grid'            # the named search space, 16 points
    assert space['when']['model']['samed']['model_cfg'] == {'size': 'tiny', 'checkpoint': str(tmp_path/'_data'/'ci'/'sam_tiny.safetensors')}
    a = tune_args(cmd)
    assert (a['space'], a['dest'], a['storage']) == (str(tmp_path/'grid-ci.json'), str(tmp_path/'grid-ci'), f"sqlite:///{tmp_path/'optuna.db'}")
    assert (a['source_dir'], a['eval_splits'], a['runner']) == (str(tmp_path/'_data'/'ci'/'source'), ['test'], 'papermill')
    for k, v in grid.PRESETS['ci']['train'].items(): assert a[k] == v, k                  # the preset's training, every trial
    assert a['data_root'] == str(tmp_path/'_data'/'ci'/'PHANTOM')
    (crf,) = [c for c in got['crf'] if c[0] != '#']
    c = tune_args(crf)
    assert c['grid'] == ['finetune_crf=False,True'] and c['crf'] and c['model'] == 'ENet' and c['dest'] == str(tmp_path/'crf-ci')
    nn = [c[0] for c in got['nnunet_2d'] if c[0].startswith('nnUNetv2')]
    assert nn == ['nnUNetv2_plan_and_preprocess', 'nnUNetv2_train', 'nnUNetv2_predict']
    r = grid_py('list', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path/'SEGTHOR', '--sam_checkpoint', tmp_path/'sam.pth',
                '--storage', 'postgresql://me@db/optuna')
    gpu = blocks(r.stdout)
    a = tune_args([c for c in gpu['grid'] if c[0] != '#'][0])
    assert (a['epochs'], a['batch_size'], a['dataset'], a['gpu'], a['bf16'], a['loss']) == (200, 8, 'SEGTHOR_MANUAL_SPLIT', True, True, None)
    assert a['storage'] == 'postgresql://me@db/optuna'
    samed = json.loads([c for c in gpu['grid'] if c[0] == '#'][0][1])['when']['model']['samed']
    assert samed == {'model_cfg': {'checkpoint': str(tmp_path/'sam.pth')}}
    assert 'nnUNetTrainer_segthorTiny' not in r.stdout
    assert grid_py('--help').returncode == 0 and 'aggregate' in grid_py('--help').stdout
    r = grid_py('run', 'grid', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path)
    assert r.returncode == 1 and 'source_dir is required' in r.stderr


@pytest.mark.slow   # 16 + 2 trials (tiny SAM models too) and their test-split evaluations, forked: minutes on 2 cores
def test_run_resume_and_aggregate(tmp_path):
    runs = tmp_path/'runs'
    r = grid_py('run', 'crf', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 1 and "needs the grid's plain ENet" in r.stdout, r.stdout + r.stderr
    r = grid_py('run', 'grid', 'crf', '--preset', 'ci', '--runs_dir', runs, '--runner', 'fork', '--set', 'epochs=1')
    assert r.returncode == 0, r.stdout + r.stderr
    names = grid.experiment_names()[:-1]
    assert all(re.search(rf'^{n} +done', r.stdout, re.M) for n in names), r.stdout
    storage = f"sqlite:///{runs/'optuna.db'}"
    n_trials = {p: len(optuna.load_study(study_name=f'{p}-ci', storage=storage).trials) for p in ('grid', 'crf')}
    assert n_trials == {'grid': 16, 'crf': 2}
    enet = grid.plain_enet_trial(grid.make_setup(grid.parser().parse_args(['run', '--preset', 'ci', '--runs_dir', str(runs)])))
    crf = optuna.load_study(study_name='crf-ci', storage=storage).trials[0]
    assert json.loads((Path(crf.user_attrs['run_dir'])/'config.json').read_text())['from_checkpoint'] == str(Path(enet.user_attrs['run_dir'])/'best.safetensors')
    # again: the studies are done, nothing runs twice
    r = grid_py('run', 'grid', 'crf', '--preset', 'ci', '--runs_dir', runs, '--runner', 'fork', '--set', 'epochs=1')
    assert r.returncode == 0 and {p: len(optuna.load_study(study_name=f'{p}-ci', storage=storage).trials) for p in ('grid', 'crf')} == n_trials
    # the paper's table from the studies and the trial folders, with Optuna's figures
    r = grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    report = runs/'report'
    table = pd.read_csv(report/'table.csv', index_col='run')
    assert sorted(table.index) == sorted(names) and table.loc['samed_fast_aug_norm', 'model'] == 'samed_fast'
    dice = table[['esophagus', 'heart', 'trachea', 'aorta', 'mean']].to_numpy(float)
    assert np.isfinite(dice).all() and ((dice >= 0) & (dice <= 1)).all()
    enet_res = pd.read_csv(Path(enet.user_attrs['run_dir'])/'eval'/'results3d.csv').query("metric == 'dice'")
    np.testing.assert_allclose(table.loc['enet', 'heart'], enet_res[enet_res['class'] == 2]['value'].mean())   # the trial's test-split results
    md = (report/'report.md').read_text()
    assert '| enet_aug_norm | ENet | True | True | False |' in md and 'bars.png' in md and 'optuna_history.png' in md
    assert (report/'optuna_importances.png').exists() and (report/'optuna_parallel.png').exists()
    assert 'Grid entries without results: nnunet_2d.' in md
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs).returncode == 1                 # no silent overwrite
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs, '--overwrite').returncode == 0


@pytest.mark.slow
def test_nnunet_2d_joins_the_table(tmp_path):
    "nnU-Net 2d (the slowest entry: plan, one 10-iteration epoch, predict; about 70 s) scored into the same layout"
    runs = tmp_path/'runs'
    r = grid_py('run', 'nnunet_2d', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((runs/'nnunet_2d'/'config.json').read_text())['model'] == 'nnU-Net 2d'
    res = pd.read_csv(runs/'nnunet_2d'/'eval'/'results3d.csv')
    assert sorted(res['patient'].unique()) == ['Patient_03']   # the same held-out test patient as the 2D models'
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs).returncode == 0
    assert 'nnU-Net 2d' in (runs/'report'/'report.md').read_text()
