"""The console scripts (`segthor_nb.cli`) as installed: every `--help` answers and lists its flags in the study's
spelling, the training flags are `TrainConfig`'s fields, `segthor-test` and `segthor-test3d` share their flags, a user's
mistake is one line on stderr, and importing the commands loads none of the heavy libraries."""
import subprocess, sys, tomllib, types
from dataclasses import asdict, fields
from pathlib import Path
import pytest
from segthor_nb.core import DemoConfig, TrainConfig, parser_of
from segthor_nb.core import EvalConfig, ONLY_2D, ONLY_3D
from segthor_nb.cli import segthor_slice, segthor_test, segthor_test3d, segthor_train

BIN = Path(sys.executable).parent
SCRIPTS = tomllib.loads((Path(__file__).parents[1]/'pyproject.toml').read_text())['project']['scripts']


def run(exe, *args):
    return subprocess.run([str(BIN/exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def flag(f):
    "A dataclass field's flag as `--help` shows it in the study's spelling"
    return f'--no_{f.name}' if f.default is True else f'--{f.name}'


FLAGS = {  # what each `--help` must list (the configuration-made commands list every field: see below)
    'segthor-phantom': ['--dest', '--n_patients', '--shape', '--n_slices', '--seed', '--tamper', '--n_test', '--num_workers'],
    'segthor-validate': ['root', '--strict'],
    'segthor-fix': ['src', '--dest', '--method', '{known,pair,blind}'],
    'segthor-slice': ['--source_dir', '--dest_dir', '--shape', '--retains', '--create_test', '--retains_test', '--fold',
                      '--num_workers', '--norm', '{minmax,window}', '--window_level', '--window_width', '--gt_name'],
    'segthor-toy2': ['--dest', '--n_train', '--n_val', '--size', '--radius', '--seed'],
    'segthor-stitch': ['--data_folder', '--dest_folder', '--num_classes', '--grp_regex', '--source_scan_pattern', '--geometry_json'],
    'segthor-train': [flag(f) for f in fields(TrainConfig)] + ['{adam,sgd,adamw,sgd-wd}', '{full,partial}'],
    'segthor-metrics3d': ['--pred_dir', '--gt_dir', '--out', '--spacing_from', '--nsd_tol', '--lcc', '--resample',
                          '--overwrite', '--gt_name', '--surface', '{voxel,surfel}'],
    'segthor-test3dnnunet': ['--pred_dir', '--gt_dir', '--out', '--gt_name', '--nsd_tol', '--lcc', '--surface', '--overwrite'],
    'segthor-nnunet-export': ['src', '--raw_root', '--preprocessed_root', '--dataset_id', '--name', '--gt_name', '--retains',
                              '--retains_test', '--seed', '--fold', '--overwrite', '--no_verify', '--num_workers'],
    'segthor-test': [flag(f) for f in fields(EvalConfig) if f.name not in ONLY_3D] + ['{ENet,shallow,samed,samed_fast,SAM2UNet,ensemble}'],
    'segthor-test3d': [flag(f) for f in fields(EvalConfig) if f.name not in ONLY_2D] + ['{voxel,surfel}'],
    'segthor-demo': [flag(f) for f in fields(DemoConfig)],
    'segthor-tune': ['--storage', '--study_name', '--grid', '--space', '--n_trials', '--dest', '--source_dir', '--eval_splits', '--runner',
                     '{papermill,fork}', '--heartbeat_interval', '--grace_period', '--no_prune'] + [flag(f) for f in fields(TrainConfig) if f.name not in ('dest', 'resume', 'overwrite')],
    'segthor-predict': ['input', '--weights', '--out', '--probabilities', '--mirror', '--overlap', '--gpu', '--overwrite'],
    'segthor-import-study': ['weights', '--model', '{ENet,shallow,samed,samed_fast,SAM2UNet}', '--dest', '--r', '--crf', '--normalize', '--overwrite'],
}


def test_every_script_is_a_cli_command():
    assert set(SCRIPTS) == set(FLAGS)
    assert all(v.startswith('segthor_nb.cli:') for v in SCRIPTS.values())


@pytest.mark.parametrize('script', sorted(FLAGS))
def test_help_lists_the_flags(script):
    r = run(script, '--help')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    missing = [f for f in FLAGS[script] if f not in r.stdout]
    assert not missing, f"{script} --help lacks {missing}"


def options(cmd)->dict:
    "{dest: (option strings, help)} of a command's parser"
    p = parser_of(cmd.__wrapped__)
    return {a.dest: (tuple(a.option_strings), a.help) for a in p._actions if a.dest not in ('help', 'pdb', 'xtra')}


def test_train_flags_are_the_train_config_fields():
    assert set(options(segthor_train)) == {f.name for f in fields(TrainConfig)}


def test_train_flags_keep_their_types():
    args = vars(parser_of(segthor_train.__wrapped__).parse_args(['--batch_size', '4', '--patch_size', '16', '--seed', '3', '--lr', '1e-3']))
    assert (args['batch_size'], args['patch_size'], args['seed'], args['lr']) == (4, 16, 3, 1e-3)


def test_test_and_test3d_share_their_flags():
    o2, o3 = options(segthor_test), options(segthor_test3d)
    shared = [f.name for f in fields(EvalConfig) if f.name not in ONLY_2D + ONLY_3D]
    assert len(shared) >= 14 and {k: o2[k] for k in shared} == {k: o3[k] for k in shared}
    assert set(o2) - set(shared) == set(ONLY_2D) and set(o3) - set(shared) == set(ONLY_3D)


def fake_module(monkeypatch, name, **functions):
    "Put a stand-in for `segthor_nb.<name>` in `sys.modules`, so a command runs without the heavy chapter"
    monkeypatch.setitem(sys.modules, f'segthor_nb.{name}', types.SimpleNamespace(**functions))


def test_study_spellings_of_weights(monkeypatch):
    seen = {}
    fake_module(monkeypatch, 'evaluate', test3d=lambda cfg: seen.update(asdict(cfg)))
    monkeypatch.setattr(sys, 'argv', ['segthor-test3d', '--model_path', 'runs/x', '--split', 'val', '--model_cfg', '{"size": "tiny"}'])
    segthor_test3d()
    assert (seen['weights'], seen['split'], seen['model_cfg'], seen['gt_name']) == ('runs/x', 'val', {'size': 'tiny'}, None)
    monkeypatch.setattr(sys, 'argv', ['segthor-test3d', '--from-checkpoint=runs/y'])
    segthor_test3d()
    assert seen['weights'] == 'runs/y'


def test_slice_p_is_num_workers(monkeypatch, tmp_path):
    seen = []
    fake_module(monkeypatch, 'slicing', slice_tree=lambda *a: seen.append(a) or {}, slice_summary=lambda r, d: 'sliced')
    (tmp_path/'train'/'Patient_01').mkdir(parents=True)
    monkeypatch.setattr(sys, 'argv', ['segthor-slice', '--source_dir', str(tmp_path), '--dest_dir', 'out', '-p', '3', '--shape', '32', '40'])
    segthor_slice()
    assert seen[0][2] == (32, 40) and seen[0][8] == 3 and seen[0][-1] == 'GT.nii.gz'


@pytest.mark.parametrize('args', [('segthor-slice', '--source_dir', '{missing}', '--dest_dir', '{tmp}/out'),
                                  ('segthor-fix', '{missing}'),
                                  ('segthor-metrics3d', '--pred_dir', '{missing}', '--gt_dir', '{tmp}', '--out', '{tmp}/r.csv')])
def test_user_error_is_one_line(args, tmp_path):
    missing = tmp_path/'no_such_folder'
    r = run(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{args[0]}: ') and str(missing) in lines[0], r.stderr
    assert 'Traceback' not in r.stderr


def test_import_is_light():
    code = "import sys, segthor_nb.cli; print(sorted(m for m in ('torch', 'monai', 'matplotlib', 'pandas') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == '[]', (r.stdout, r.stderr)
