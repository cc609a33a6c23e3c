"""segthor-tune as workers run it: two worker processes share one study on a real PostgreSQL server (a throw-away
cluster started for these tests) and on SQLite, one of them is SIGKILLed mid-trial (its trial ends FAIL by heartbeat and
the grid point is run again by the other), a hopeless trial's training is killed by the median pruner, and a trial runs
as papermill notebooks (04_train, then 05b_evaluate on the native grid)."""
import glob, json, os, pwd, shutil, signal, socket, subprocess, sys, tempfile, time, warnings
from itertools import product
from pathlib import Path
import nbformat, optuna, pandas as pd, pytest, torch
from optuna.trial import TrialState
from segthor_nb.train import tiny_phantom
from segthor_nb.pipeline import fg_dice
from segthor_nb.tune import open_study, storage_url, tune

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}
GRID = {'lr': [5e-3, 1e-3], 'loss': ['ce', 'dce']}                      # 4 points
TRAIN = ['--dataset', 'PHANTOM', '--model', 'shallow', '--epochs', '2', '--batch_size', '4', '--num_workers', '0', '--no_progress']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp('phantom'), n_patients=3, size=32, n_slices=8)


def skip(reason):
    "Skip with the reason also in pytest's warnings summary, so that a skipped server test is never silent"
    warnings.warn(f"PostgreSQL test skipped: {reason}"); pytest.skip(reason)


def pg_tool(name):
    "A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin"
    found = sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'), key=lambda p: int(Path(p).parts[-3]))
    return shutil.which(name) or (found[-1] if found else None)


@pytest.fixture(scope='module')
def postgres():
    "A throw-away PostgreSQL cluster on 127.0.0.1 (run as the `postgres` user when we are root); its URL"
    initdb, pg_ctl = pg_tool('initdb'), pg_tool('pg_ctl')
    if not (initdb and pg_ctl): skip("PostgreSQL is not installed (no initdb/pg_ctl; Debian: apt-get install postgresql)")
    try: import psycopg  # noqa: F401
    except ImportError: skip("psycopg 3 is not installed (pip install 'segthor_nb[postgres]')")
    as_user = []
    if os.geteuid() == 0:
        try: pwd.getpwnam('postgres')
        except KeyError: skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ['runuser', '-u', 'postgres', '--']
    d = Path(tempfile.mkdtemp(prefix='segthor_pg_')); os.chmod(d, 0o755)
    if as_user: shutil.chown(d, 'postgres')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    r = subprocess.run([*as_user, initdb, '-D', d/'data', '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8'], capture_output=True, text=True)
    if r.returncode: shutil.rmtree(d, ignore_errors=True); skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    r = subprocess.run([*as_user, pg_ctl, '-D', d/'data', '-l', d/'server.log', '-w', '-t', '60', '-o', f'-h 127.0.0.1 -p {port} -k {d} -F', 'start'],
                       capture_output=True, text=True)
    if r.returncode:
        log = (d/'server.log').read_text()[-300:] if (d/'server.log').exists() else r.stderr
        shutil.rmtree(d, ignore_errors=True); skip(f"pg_ctl could not start the server: {log.strip()}")
    yield f'postgresql://postgres@127.0.0.1:{port}/postgres'
    subprocess.run([*as_user, pg_ctl, '-D', d/'data', '-m', 'immediate', '-w', 'stop'], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def start_worker(url, dest, data, log):
    "One `segthor-tune` worker on the 4-point grid (trials forked: seconds each), heartbeats every second"
    argv = [str(BIN/'segthor-tune'), '--grid', *[f"{k}={','.join(map(str, v))}" for k, v in GRID.items()], '--storage', url,
            '--study_name', 'grid4', '--dest', str(dest), '--runner', 'fork', '--heartbeat_interval', '1', '--grace_period', '3',
            '--n_startup_trials', '10',                                     # no pruning: every point completes
            '--data_root', str(data), *TRAIN]
    return subprocess.Popen(argv, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=ENV)


def load(url, name='grid4'):
    return optuna.load_study(study_name=name, storage=storage_url(url, '.'))


def wait_running_trial(url, pid, timeout=120):
    "The number of the first trial that worker `pid` runs (polling the storage)"
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            for t in load(url).get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get('worker', '').endswith(f':{pid}'): return t.number
        except Exception: pass                                            # the study (or its tables) not created yet
        time.sleep(.1)
    raise AssertionError(f"worker {pid} ran no trial in {timeout} s")


def leftovers(dest):
    "Processes still running with `dest` in their command line (a worker's training that outlived it)"
    out = []
    for p in Path('/proc').glob('[0-9]*'):
        try:
            if str(dest) in (p/'cmdline').read_bytes().decode(errors='replace') and 'State:\tZ' not in (p/'status').read_text(): out.append(p.name)
        except OSError: pass
    return out


@pytest.mark.parametrize('backend', ['postgresql', 'sqlite'])
def test_two_workers_share_the_grid_and_a_killed_workers_point_is_retried(backend, tmp_path, data, request):
    url = request.getfixturevalue('postgres') if backend == 'postgresql' else f"sqlite:///{tmp_path/'optuna.db'}"
    dest = tmp_path/'tune'
    w1, w2 = start_worker(url, dest, data, tmp_path/'w1.log'), start_worker(url, dest, data, tmp_path/'w2.log')
    try:
        killed = wait_running_trial(url, w1.pid)
        w1.send_signal(signal.SIGKILL); w1.wait()                       # mid-trial: its training is running
        assert w2.wait(timeout=180) == 0, (tmp_path/'w2.log').read_text()
    finally:
        for w in (w1, w2): w.kill()
    trials = {t.number: t for t in load(url).trials}
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    points = [dict(zip(GRID, v)) for v in product(*GRID.values())]
    # 4 COMPLETE trials, the 4 grid points, none twice
    assert sorted(map(str, (t.params for t in complete))) == sorted(map(str, points)), [(t.number, t.state, t.params) for t in trials.values()]
    # the killed worker's trial: FAIL by heartbeat (no error of its own), run again by the other worker
    k = trials[killed]
    assert k.state == TrialState.FAIL and 'error' not in k.user_attrs and k.user_attrs['worker'].endswith(f':{w1.pid}')
    retry = [t for t in complete if t.system_attrs.get('failed_trial') == killed]
    assert len(retry) == 1 and retry[0].params == k.params and retry[0].user_attrs['worker'].endswith(f':{w2.pid}')
    # nothing else ran: any other FAIL is a surplus trial that trained nothing; nothing left running or waiting
    others = [t for t in trials.values() if t.state == TrialState.FAIL and t.number != killed]
    assert all(t.user_attrs['error'].startswith('surplus') and not (dest/str(t.number)).exists() for t in others)
    assert {t.state for t in trials.values()} <= {TrialState.COMPLETE, TrialState.FAIL}
    trained = {int(p.name) for p in dest.iterdir() if p.name.isdigit()}
    assert {t.number for t in complete} <= trained <= {t.number for t in complete} | {killed}   # the killed one if it got to start
    for t in complete:
        h = pd.read_csv(dest/str(t.number)/'history.csv')
        assert len(h) == 2 and t.value == h['dice3d_fg'].max() and t.intermediate_values == dict(zip(h['epoch'], h['dice3d_fg']))
    assert not leftovers(dest)                                           # the killed worker's training went with it
    assert (dest/'report'/'report.md').exists() and (dest/'report'/'optuna_history.png').exists()
    assert 'no heartbeat' in pd.read_csv(dest/'report'/'trials.csv', index_col='trial').loc[killed, 'note']


def test_median_pruner_kills_a_hopeless_training(tmp_path, data):
    "A trial far below an earlier one at the same epoch is pruned: its training is killed, not run to the end"
    space, dest = {'lr': {'low': 1e-9, 'high': 1e-8, 'log': True}}, tmp_path/'tune'
    dest.mkdir()
    study = open_study(storage_url(None, dest), 'prune', 'tpe', space)      # an earlier, good trial in the same study
    study.add_trial(optuna.create_trial(params={'lr': 5e-9}, distributions={'lr': optuna.distributions.FloatDistribution(1e-9, 1e-8, log=True)},
                                        value=.9, intermediate_values={e: .9 for e in range(1, 31)}))
    fixed = dict(dataset='PHANTOM', data_root=str(data), model='shallow', epochs=30, batch_size=4, num_workers=0, progress=False)
    study = tune(space, fixed, 'tpe', dest=dest, study_name='prune', n_trials=2, runner='fork', n_startup_trials=1, progress=False)
    t = study.trials[1]
    assert t.state == TrialState.PRUNED and min(t.intermediate_values) == 1, (t.state, t.user_attrs)
    h = pd.read_csv(dest/'1'/'history.csv')
    assert len(h) < 30 and not (dest/'1'/'overlays.png').exists()        # stopped early (fit writes overlays at its end)
    assert len(t.intermediate_values) <= len(h)


def trimmed_training_notebook(folder):
    "nbs/04_train.ipynb cut to its parameters cell and its experiment cell (`papermill_config`, `train`)"
    nb = nbformat.read(ROOT/'nbs'/'04_train.ipynb', 4)
    params = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    run = next(c for c in nb.cells if c.cell_type == 'code' and 'papermill_config(defaults' in c.source and '#| export' not in c.source)
    nb.cells = [nbformat.v4.new_code_cell('from pathlib import Path\nfrom segthor_nb.train import *'), params, run]
    folder.mkdir(); nbformat.write(nb, folder/'04_train.ipynb')
    return folder


def check_papermill_trial(dest, r, nbs=None):
    "One COMPLETE papermill trial in dest/0: the executed notebook, its parameters, each epoch reported"
    assert r.returncode == 0, r.stdout + r.stderr
    (t,) = load(storage_url(None, dest), 'tune').trials
    run = dest/'0'
    assert t.state == TrialState.COMPLETE, (t.user_attrs, (run/'papermill.log').read_text()[-3000:])
    ran = nbformat.read(run/'04_train.ipynb', 4)
    injected = next(c.source for c in ran.cells if 'injected-parameters' in c.metadata.get('tags', []))
    assert f'dest = "{run}"' in injected and 'defaults = "cli"' in injected and 'extra = {"progress": false}' in injected.lower()
    assert json.loads((run/'config.json').read_text())['lr'] == 5e-3 and (run/'best.safetensors').exists()
    h = pd.read_csv(run/'history.csv')
    assert t.intermediate_values == dict(zip(h['epoch'], h['dice3d_fg']))                   # each epoch reported
    assert 'trial 0   COMPLETE' in r.stdout and 'best: trial 0' in r.stdout
    return t, run


def test_papermill_trial(tmp_path, data):
    "The default runner's plumbing, on the training notebook's parameters and experiment cells (seconds, not a minute)"
    dest, nbs = tmp_path/'tune', trimmed_training_notebook(tmp_path/'nbs')
    r = subprocess.run([str(BIN/'segthor-tune'), '--grid', 'lr=5e-3', '--dest', str(dest), '--nbs', str(nbs), '--data_root', str(data), *TRAIN],
                       capture_output=True, text=True, env=ENV, timeout=600)
    t, run = check_papermill_trial(dest, r)
    assert t.value == pd.read_csv(run/'history.csv')['dice3d_fg'].max()                   # no SEGTHOR tree: training's best epoch


@pytest.mark.slow   # about 70 s: the whole training notebook (its examples too) and the evaluation notebook; test_papermill_trial is the same path
def test_papermill_trial_whole_notebooks_with_3d_evaluation(tmp_path, data):
    "The default runner on the real notebooks: 04_train, then 05b_evaluate on the validation patients' native grid"
    dest = tmp_path/'tune'
    r = subprocess.run([str(BIN/'segthor-tune'), '--grid', 'lr=5e-3', '--dest', str(dest), '--data_root', str(data), '--deterministic',
                        '--source_dir', str(data/'source'), *TRAIN], capture_output=True, text=True, env=ENV, timeout=600)
    t, run = check_papermill_trial(dest, r)
    assert (run/'eval_val'/'05b_evaluate.ipynb').exists()
    assert t.value == pytest.approx(fg_dice(pd.read_csv(run/'eval_val'/'results3d.csv')))   # the objective: native-grid val Dice


def test_fork_trial_with_3d_evaluation(tmp_path, data):
    "With a SEGTHOR tree each trial is scored on the validation patients' native grid, and that is the objective"
    fixed = dict(dataset='PHANTOM', data_root=str(data), model='shallow', epochs=1, batch_size=4, num_workers=0, progress=False)
    study = tune({'lr': [5e-3]}, fixed, dest=tmp_path/'tune', runner='fork', source_dir=str(data/'source'), progress=False)
    (t,) = study.trials
    res = pd.read_csv(tmp_path/'tune'/'0'/'eval_val'/'results3d.csv')
    assert t.state == TrialState.COMPLETE and t.value == pytest.approx(fg_dice(res)) and set(res['patient']) == {'Patient_01'}


def test_user_errors_are_one_line(tmp_path, data, monkeypatch):
    from segthor_nb.cli import segthor_tune
    for args, msg in [(['--grid', 'lrate=1'], "'lrate': not a TrainConfig field"), (['--grid', 'model=UNetX'], '--model'),
                      ([], 'give one search space'), (['--grid', 'lr=1e-3', '--storage', 'nonsense'], 'expected a URL')]:
        monkeypatch.setattr(sys, 'argv', ['segthor-tune', *args, '--dest', str(tmp_path/'t'), '--data_root', str(data), *TRAIN])
        with pytest.raises(SystemExit) as e: segthor_tune()
        assert str(e.value).startswith('segthor-tune: ') and '\n' not in str(e.value) and msg in str(e.value), (args, e.value)
