"""runs/grid.py: the study's grid as papermill commands (`list`), executed on a tiny phantom (`run`: results per run, a
second run skips, a failing run is reported and leaves earlier results intact), and the paper's table (`aggregate`)."""
import json, os, re, shlex, subprocess, sys
from pathlib import Path
import nbformat, numpy as np, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT/'runs'/'grid.py'
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}
sys.path.insert(0, str(GRID.parent))
import grid  # noqa: E402


def grid_py(*args, timeout=900):
    return subprocess.run([sys.executable, str(GRID), *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def parameter_names(nb_name):
    "Names assigned in a notebook's papermill `parameters` cell"
    nb = nbformat.read(ROOT/'nbs'/nb_name, 4)
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    ns = {}; exec(cell.source, {}, ns)
    return set(ns)


def blocks(listing):
    "`list` output -> {experiment: [argv, ...]}"
    out, name = {}, None
    for line in listing.splitlines():
        if m := re.match(r'## (\S+)', line): name = m[1]; out[name] = []
        elif name and line.strip() and not line.startswith('#'): out[name].append(shlex.split(line))
    return out


def papermill_params(argv):
    "(-p pairs, -y object) of a papermill command line"
    p, y = {}, {}
    for i, a in enumerate(argv):
        if a == '-p': p[argv[i + 1]] = argv[i + 2]
        if a == '-y': y |= json.loads(argv[i + 1])
    return p, y


def test_list_prints_valid_papermill_commands(tmp_path):
    r = grid_py('list', '--preset', 'ci', '--runs_dir', tmp_path)
    assert r.returncode == 0, r.stderr
    got = blocks(r.stdout)
    assert list(got) == list(grid.experiment_grid())                          # one block per grid entry, in grid order
    assert len(got) == 4*4 + 2 + 1
    train_names, eval_names = parameter_names('04_train.ipynb'), parameter_names('05b_evaluate.ipynb')
    for name, cmds in got.items():
        if name == 'nnunet_2d':
            assert [c[0] for c in cmds if c[0].startswith('nnUNetv2')] == ['nnUNetv2_plan_and_preprocess', 'nnUNetv2_train', 'nnUNetv2_predict']
            continue
        mkdir, train, evaluate = cmds
        assert mkdir == ['mkdir', '-p', str(tmp_path/name/'eval')]
        assert Path(train[0]).name == 'papermill' and train[1].endswith('nbs/04_train.ipynb') and train[2] == str(tmp_path/name/'04_train.ipynb')
        assert evaluate[1].endswith('nbs/05b_evaluate.ipynb') and evaluate[2] == str(tmp_path/name/'eval'/'05b_evaluate.ipynb')
        p, y = papermill_params(train)
        assert set(p) | set(y) <= train_names, (set(p) | set(y)) - train_names   # papermill would only warn about an unknown name
        assert p['dest'] == str(tmp_path/name) and p['epochs'] == '2' and p['dataset'] == 'PHANTOM'
        assert p['augment'] == str('_aug' in name) and p['normalize'] == str('_norm' in name)
        pe, ye = papermill_params(evaluate)
        assert set(pe) | set(ye) <= eval_names and pe['run_dir'] == str(tmp_path/name) and pe['split'] == 'test'
        if name.startswith('sam'): assert y['model_cfg']['size'] == 'tiny' and y['model_cfg']['checkpoint'].startswith(str(tmp_path/'_data'))
    assert papermill_params(got['enet_crf_finetune'][1])[1]['extra'] == {'crf': True, 'finetune_crf': True, 'from_checkpoint': str(tmp_path/'enet'/'best.safetensors')}
    r = grid_py('list', '--preset', 'gpu', '--runs_dir', tmp_path, '--data_root', tmp_path/'SEGTHOR', '--sam_checkpoint', tmp_path/'sam.pth')
    gpu = blocks(r.stdout)
    p, y = papermill_params(gpu['samed_fast_aug_norm'][1])
    assert (p['epochs'], p['batch_size'], p['dataset'], y['extra'], y['loss']) == ('200', '8', 'SEGTHOR_MANUAL_SPLIT', {'gpu': True, 'bf16': True}, None)
    assert y['model_cfg'] == {'checkpoint': str(tmp_path/'sam.pth')}
    assert 'nnUNetTrainer_segthorTiny' not in r.stdout and '-device' not in ' '.join(map(' '.join, gpu['nnunet_2d']))
    assert grid_py('--help').returncode == 0 and 'aggregate' in grid_py('--help').stdout


@pytest.mark.slow   # 5-6 min on 2 cores: papermill-trains two runs; 04/05b under papermill are covered by test_evaluate_papermill
def test_run_skip_fail_and_aggregate(tmp_path):
    runs = tmp_path/'runs'
    # 1. two runs, the first failing (bad model name): reported, the other one still runs; exit code 1
    r = grid_py('run', 'enet', 'enet_aug_norm', '--preset', 'ci', '--runs_dir', runs, '--set', 'enet.model=NoSuchNet')
    assert r.returncode == 1, r.stdout + r.stderr
    status = {l.split()[0]: l.split()[1] for l in r.stdout.splitlines() if l.startswith('enet')}
    assert status == {'enet': 'FAILED', 'enet_aug_norm': 'done'}, r.stdout
    assert 'NoSuchNet' in r.stdout and not (runs/'enet').exists() and (runs/'_work'/'enet'/'04_train.ipynb').exists()
    run = runs/'enet_aug_norm'
    for f in ('04_train.ipynb', 'config.json', 'best.safetensors', 'history.csv', 'curves.png', 'eval/05b_evaluate.ipynb',
              'eval/results3d.csv', 'eval/results2d.csv', 'eval/organ_dice.png'):
        assert (run/f).exists(), f
    cfg = json.loads((run/'config.json').read_text()); assert cfg['augment'] is True and cfg['normalize'] is True   # evaluated on [-1, 1] inputs too
    # 2. again, without the fault: enet runs, enet_aug is skipped
    r = grid_py('run', 'enet', 'enet_aug_norm', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r'^enet +done', r.stdout, re.M) and re.search(r'^enet_aug_norm +skipped', r.stdout, re.M), r.stdout
    # 3. --overwrite with a run that fails (no notebooks there): the earlier results stay as they were
    before = {p: p.stat().st_mtime_ns for p in run.rglob('*')}
    r = grid_py('run', 'enet_aug_norm', '--preset', 'ci', '--runs_dir', runs, '--overwrite', '--nbs', tmp_path/'nowhere')
    assert r.returncode == 1 and re.search(r'^enet_aug_norm +FAILED', r.stdout, re.M), r.stdout + r.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob('*')} == before
    # 4. the paper's table from both runs
    r = grid_py('aggregate', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    report = runs/'report'
    table = pd.read_csv(report/'table.csv', index_col='run')
    assert sorted(table.index) == ['enet', 'enet_aug_norm'] and list(table['model']) == ['ENet', 'ENet']
    dice = table[['esophagus', 'heart', 'trachea', 'aorta', 'mean']].to_numpy(float)
    assert np.isfinite(dice).all() and ((dice >= 0) & (dice <= 1)).all()
    np.testing.assert_allclose(table['mean'], dice[:, :4].mean(1))
    res = pd.read_csv(runs/'enet'/'eval'/'results3d.csv').query("metric == 'dice'")
    np.testing.assert_allclose(table.loc['enet', 'heart'], res[res['class'] == 2]['value'].mean())   # the table is the eval's results
    md = (report/'report.md').read_text()
    assert '| enet_aug_norm | ENet | True | True | False |' in md and 'bars.png' in md and (report/'bars.png').exists()
    assert grid_py('aggregate', '--runs_dir', runs).returncode == 1                                  # no silent overwrite
    assert grid_py('aggregate', '--runs_dir', runs, '--overwrite').returncode == 0


@pytest.mark.slow
def test_nnunet_2d_joins_the_table(tmp_path):
    "nnU-Net 2d (the slowest entry: plan, one 10-iteration epoch, predict; about 70 s) scored into the same layout"
    runs = tmp_path/'runs'
    r = grid_py('run', 'nnunet_2d', '--preset', 'ci', '--runs_dir', runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((runs/'nnunet_2d'/'config.json').read_text())['model'] == 'nnU-Net 2d'
    res = pd.read_csv(runs/'nnunet_2d'/'eval'/'results3d.csv')
    assert sorted(res['patient'].unique()) == ['Patient_03']   # the same held-out test patient as the 2D models'
    assert grid_py('aggregate', '--runs_dir', runs).returncode == 0
    assert 'nnU-Net 2d' in (runs/'report'/'report.md').read_text()
