"""runs/grid.py, a thin layer over segthor_nb.tune: the study's complete results table as a run list (the 16-point
STUDY_GRID, samed r4, the CRF runs, the ensemble, nnU-Net's three), `list` prints the commands, `run` runs the parts as
Optuna studies on a tiny phantom (a second run runs nothing again; --seeds/--folds repeat every configuration), and
`aggregate` builds the paper's table from the studies and run folders, pooling replicates, with Optuna's figures."""
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


def test_the_run_list_is_the_study_table():
    "Every run of the study's results table (its results_metrics/ folders, nnU-Net's three, the ensemble), once each"
    names = grid.experiment_names()
    assert len(names) == len(set(names)) == 24
    study = ['enet', 'enet_aug', 'enet_norm', 'enet_aug_norm', 'enet_aug_crf', 'samed_r4', 'samed_r4_aug_norm',
             *[f'{m}{v}' for m in ('samed', 'samed_fast', 'sam2unet') for v in ('', '_aug', '_norm', '_aug_norm')],
             'samed_fast_aug_crf', 'ensemble', 'nnunet_2d', 'nnunet_3d_lowres', 'nnunet_3d_fullres']
    assert sorted(names) == sorted(study)
    assert grid.experiment_name(dict(model='samed', r=4, augment=True, normalize=True)) == 'samed_r4_aug_norm'
    assert grid.experiment_name(dict(model='samed_fast', augment=True, crf=True)) == 'samed_fast_aug_crf'
    assert list(grid.PRESETS) == ['ci', 'smoke', 'cpu', 'gpu'] and grid.PRESETS['gpu']['train']['epochs'] == 200


def test_list_prints_the_tune_commands(tmp_path):
    r = grid_py('list', '--preset', 'ci', '--runs_dir', tmp_path)
    assert r.returncode == 0, r.stderr
    got = blocks(r.stdout)
    assert list(got) == ['grid', 'samed_r4', 'crf', 'ensemble', 'nnunet']
    (space,), (cmd,) = [json.loads(c[1]) for c in got['grid'] if c[0] == '#'], [c for c in got['grid'] if c[0] != '#']
    assert space['space'] == grid.STUDY_GRID and space['sampler'] == 'grid'            # the named search space, 16 points
    assert space['when']['model']['samed']['model_cfg'] == {'size': 'tiny', 'checkpoint': str(tmp_path/'_data'/'ci'/'sam_tiny.safetensors')}
    a = tune_args(cmd)
    assert (a['space'], a['dest'], a['storage']) == (str(tmp_path/'grid-ci.json'), str(tmp_path/'grid-ci'), f"sqlite:///{tmp_path/'optuna.db'}")
    assert (a['source_dir'], a['eval_splits'], a['runner']) == (str(tmp_path/'_data'/'ci'/'source'), ['test'], 'papermill')
    for k, v in grid.PRESETS['ci']['train'].items(): assert a[k] == v, k                  # the preset's training, every trial
    assert a['data_root'] == str(tmp_path/'_data'/'ci'/'PHANTOM')
    (r4,) = [c for c in got['samed_r4'] if c[0] != '#']
    assert (tune_args(r4)['model'], tune_args(r4)['r']) == ('samed', 4)
    assert json.loads([c for c in got['samed_r4'] if c[0] == '#'][0][1])['when'] == {'augment': {'true': {'normalize': True}}}
    (crf,) = [c for c in got['crf'] if c[0] != '#']
    assert tune_args(crf)['crf'] and tune_args(crf)['dest'] == str(tmp_path/'crf-ci')
    (ens,) = got['ensemble']
    assert ens[:4] == ['segthor-test3d', '--model', 'ensemble', '--ensemble']
    nn = [c[0] for c in got['nnunet'] if c[0].startswith('nnUNetv2')]
    assert nn == ['nnUNetv2_plan_and_preprocess'] + ['nnUNetv2_train', 'nnUNetv2_predict']*3
    r = grid_py('list', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path/'SEGTHOR', '--sam_checkpoint', tmp_path/'sam.pth',
                '--storage', 'postgresql://me@db/optuna', '--seeds', '0', '1')
    gpu = blocks(r.stdout)
    a = tune_args([c for c in gpu['grid'] if c[0] != '#'][0])
    assert (a['epochs'], a['batch_size'], a['dataset'], a['gpu'], a['bf16'], a['loss'], a['lr']) == (200, 8, 'SEGTHOR_MANUAL_SPLIT', True, True, None, 5e-4)
    assert a['storage'] == 'postgresql://me@db/optuna' and a['dest'] == str(tmp_path/'grid-gpu-s0_1')
    space = json.loads([c for c in gpu['grid'] if c[0] == '#'][0][1])
    assert space['when']['model']['samed'] == {'model_cfg': {'checkpoint': str(tmp_path/'sam.pth')}} and space['space']['seed'] == [0, 1]
    assert 'nnUNetTrainer_segthorTiny' not in r.stdout
    assert grid_py('--help').returncode == 0 and 'aggregate' in grid_py('--help').stdout
    r = grid_py('run', 'grid', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path)
    assert r.returncode == 1 and 'source_dir is required' in r.stderr
    r = grid_py('list', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path, '--folds', '0', '1')
    assert r.returncode == 1 and '{fold}' in r.stderr


def test_ensemble_crf_points_and_replicates_aggregate(tmp_path, monkeypatch):
    """Two seeds of two configurations (tiny ENets, one epoch) recorded as a grid study's trials: the CRF study's points come
    from their checkpoints, the ensemble step scores each seed's pair as one model, and `aggregate` pools the seeds"""
    import torch
    from segthor_nb.evaluate import test3d
    from segthor_nb.train import train
    torch.set_num_threads(1)
    runs = tmp_path/'runs'
    a = grid.parser().parse_args(['run', '--preset', 'ci', '--runs_dir', str(runs), '--seeds', '0', '1'])
    s = grid.make_setup(a)
    assert s.tag == '-s0_1' and grid.replicates(s) == [(0, 0), (1, 0)]
    assert grid.crf_points(s)[0] is None                                       # no grid trials yet
    grid.prepare_data(s)
    study = optuna.create_study(study_name='grid-ci-s0_1', storage=s.storage)
    dist = {'augment': optuna.distributions.CategoricalDistribution([False, True]), 'seed': optuna.distributions.CategoricalDistribution([0, 1])}
    for seed, augment in [(0, False), (0, True), (1, False), (1, True)]:
        run = runs/'grid-ci-s0_1'/f'{seed}{augment:d}'
        train(**grid.fixed_fields(s) | dict(model='ENet', augment=augment, seed=seed, epochs=1, progress=False, dest=str(run)))
        test3d(run, split='test', source_dir=s.source_dir, num_workers=0, progress=False)
        study.add_trial(optuna.trial.create_trial(params=dict(augment=augment, seed=seed), distributions=dist, value=.5, user_attrs={'run_dir': str(run)}))
    assert grid.crf_points(s)[1] == [('samed_fast_aug', 0, 0), ('samed_fast_aug', 1, 0)]   # what is missing for the CRF study
    monkeypatch.setattr(grid, 'CRF_OF', ('enet_aug',))
    space, when = grid.crf_points(s)
    assert len(space['from_checkpoint']) == 2 and all(p.endswith('best.safetensors') for p in space['from_checkpoint'])   # enet_aug of each seed
    assert sorted(w['seed'] for w in when['from_checkpoint'].values()) == [0, 1] and all(w['augment'] for w in when['from_checkpoint'].values())
    monkeypatch.setattr(grid, 'ENSEMBLE_OF', ('enet', 'enet_aug'))
    a.overwrite = False
    assert grid.run_ensemble(s, a) == 0
    rec = json.loads((runs/'ensemble-ci-s0_1'/'s1_f0'/'eval'/'provenance3d.json').read_text())['ensemble']
    assert rec['members'] == [str(runs/'grid-ci-s0_1'/'10'), str(runs/'grid-ci-s0_1'/'11')]
    assert grid.main(['aggregate', '--preset', 'ci', '--runs_dir', str(runs), '--seeds', '0', '1']) == 0
    table = pd.read_csv(runs/'report'/'table.csv', index_col='run')
    assert sorted(table.index) == ['enet', 'enet_aug', 'ensemble'] and (table['replicates'] == 2).all()
    long = pd.read_csv(runs/'report'/'results_long.csv')
    d = long[long['slice'].isna() & (long['metric'] == 'dice') & (long['run'] == 'enet_aug')]
    per_seed = d.groupby('seed')['value'].mean()
    np.testing.assert_allclose(table.loc['enet_aug', ['dice_mean', 'dice_sd']].to_numpy(float), [per_seed.mean(), per_seed.std()])
    md = (runs/'report'/'report.md').read_text()
    assert 'Grid entries without results: ' in md and 'samed_r4_aug_norm' in md
    assert set(long['replicate_run']) >= {'enet_aug_s0_f0', 'enet_aug_s1_f0', 'ensemble_s1_f0'}   # run names with seed and fold
    # the study beside ours: enet_aug is the study's ENet aug run (its 4 patients' mean Dice from the package data)
    from segthor_nb.compare import study_results
    sbs = pd.read_csv(runs/'report'/'study_vs_ours.csv', index_col=['run', 'organ'])
    st = study_results('3d'); st = st[(st['run'] == 'enet_aug') & (st['metric'] == 'dice') & (st['organ'] == 'heart')]
    assert sbs.loc[('enet_aug', 'heart'), 'study_run'] == 'enet_aug' and sbs.loc[('enet_aug', 'heart'), 'runs'] == 2
    np.testing.assert_allclose(sbs.loc[('enet_aug', 'heart'), 'study'], st['value'].mean())
    heart = long[long['slice'].isna() & (long['metric'] == 'dice') & (long['run'] == 'enet_aug') & (long['class'] == 2)]
    np.testing.assert_allclose(sbs.loc[('enet_aug', 'heart'), 'ours'], heart.groupby('seed')['value'].mean().mean())
    stats = pd.read_csv(runs/'report'/'statistics.csv', index_col=['run', 'organ'])
    assert {'enet_s0_f0', 'enet_aug_s1_f0'} <= set(stats.index.unique('run')) and (stats['lo'] <= stats['mean'] + 1e-12).all()
    assert '## The study beside ours' in md and '## Statistics' in md


@pytest.mark.slow   # 16 + 2 + 2 trials (tiny SAM models too), their test-split evaluations and the ensemble, forked: minutes on 2 cores
def test_run_resume_and_aggregate(tmp_path):
    runs = tmp_path/'runs'
    r = grid_py('run', 'crf', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 1 and "needs the grid's enet_aug, samed_fast_aug" in r.stdout, r.stdout + r.stderr
    r = grid_py('run', 'grid', 'samed_r4', 'crf', 'ensemble', '--preset', 'ci', '--runs_dir', runs, '--runner', 'fork', '--set', 'epochs=1')
    assert r.returncode == 0, r.stdout + r.stderr
    names = [n for n in grid.experiment_names() if not n.startswith('nnunet')]
    assert all(re.search(rf'^{n}_s2024_f0 +done', r.stdout, re.M) for n in names), r.stdout
    storage = f"sqlite:///{runs/'optuna.db'}"
    n_trials = {p: len(optuna.load_study(study_name=f'{p}-ci', storage=storage).trials) for p in ('grid', 'samed_r4', 'crf')}
    assert n_trials == {'grid': 16, 'samed_r4': 2, 'crf': 2}
    s = grid.make_setup(grid.parser().parse_args(['run', '--preset', 'ci', '--runs_dir', str(runs)]))
    src, crf = grid.trial_runs(s, 'grid'), grid.trial_runs(s, 'crf')
    cfg = json.loads((crf[('enet_aug_crf', 2024, 0)]/'config.json').read_text())
    assert cfg['from_checkpoint'] == str(src[('enet_aug', 2024, 0)]/'best.safetensors') and cfg['crf'] and cfg['augment']
    # again: the studies are done, nothing runs twice
    r = grid_py('run', 'grid', 'samed_r4', 'crf', '--preset', 'ci', '--runs_dir', runs, '--runner', 'fork', '--set', 'epochs=1')
    assert r.returncode == 0 and {p: len(optuna.load_study(study_name=f'{p}-ci', storage=storage).trials) for p in n_trials} == n_trials
    # the paper's table from the studies, the trial folders and the ensemble, with Optuna's figures
    r = grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    report = runs/'report'
    table = pd.read_csv(report/'table.csv', index_col='run')
    assert sorted(table.index) == sorted(names) and table.loc['samed_fast_aug_norm', 'model'] == 'samed_fast'
    assert table.loc['samed_r4_aug_norm', 'model'] == 'samed r4' and table.loc['ensemble', 'model'] == 'ensemble'
    dice = table[['esophagus', 'heart', 'trachea', 'aorta', 'mean']].to_numpy(float)
    assert np.isfinite(dice).all() and ((dice >= 0) & (dice <= 1)).all()
    enet_res = pd.read_csv(src[('enet', 2024, 0)]/'eval'/'results3d.csv').query("metric == 'dice'")
    np.testing.assert_allclose(table.loc['enet', 'heart'], enet_res[enet_res['class'] == 2]['value'].mean())   # the trial's test-split results
    md = (report/'report.md').read_text()
    assert '| enet_aug_norm | ENet | True | True | False |' in md and 'bars.png' in md and 'optuna_history.png' in md
    assert 'cannot learn here' in md and '| samed_fast | samed_fast | False | False | False | — |' in md   # words, not zeros
    assert (report/'optuna_importances.png').exists() and (report/'optuna_parallel.png').exists()
    assert 'Grid entries without results: nnunet_2d, nnunet_3d_lowres, nnunet_3d_fullres.' in md
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs).returncode == 1                 # no silent overwrite
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs, '--overwrite').returncode == 0


@pytest.mark.slow
def test_nnunet_joins_the_table(tmp_path):
    "nnU-Net 2d, 3d_lowres, 3d_fullres (the slowest entries: plan once, one 10-iteration epoch each, predict) in the same layout"
    runs = tmp_path/'runs'
    r = grid_py('run', 'nnunet', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r'^nnunet_3d_lowres +not planned', r.stdout, re.M), r.stdout    # a 48² phantom: no low-resolution stage
    for c in ('2d', '3d_fullres'):
        assert json.loads((runs/f'nnunet_{c}-ci'/'config.json').read_text())['model'] == f'nnU-Net {c}'
        res = pd.read_csv(runs/f'nnunet_{c}-ci'/'eval'/'results3d.csv')
        assert sorted(res['patient'].unique()) == ['Patient_03']   # the same held-out test patient as the 2D models'
    assert grid_py('aggregate', '--preset', 'ci', '--runs_dir', runs).returncode == 0
    assert 'nnU-Net 3d_fullres' in (runs/'report'/'report.md').read_text()
