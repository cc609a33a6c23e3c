#!/usr/bin/env python
"""The study's experiment grid, one papermill run per experiment, and the aggregation of whatever runs exist.

Each experiment trains with nbs/04_train.ipynb and evaluates with nbs/05b_evaluate.ipynb (the evaluation entry point;
05_metrics3d only holds the metric functions), both executed by papermill. A run folder <runs_dir>/<name>/ holds the
executed 04_train.ipynb, config.json, the checkpoints, history and curves, and eval/ with the executed
05b_evaluate.ipynb and results3d.csv, results2d.csv, summaries, course arrays and figures. nnunet_2d is nnU-Net's own
pipeline (segthor_nb.nnunet), scored with the same 3D metrics into the same eval/ layout.

  python runs/grid.py list [--preset cpu|gpu|ci]            the exact commands, one block per experiment
  python runs/grid.py run NAME... | --all [--preset ...]    execute; a run with eval/results3d.csv is skipped
  python runs/grid.py aggregate [--dest runs/report]        report.md (the paper's table) and the study's figures

A run is executed in <runs_dir>/_work/<name>/ and moved to <runs_dir>/<name>/ only when training and evaluation both
succeeded, so a failed run never touches earlier results (its _work folder is kept for inspection).
"""
from __future__ import annotations
import argparse, json, os, shlex, shutil, subprocess, sys, time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
BIN = Path(sys.executable).parent
PAPERMILL = str(BIN/'papermill') if (BIN/'papermill').exists() else 'papermill'

# ---------------------------------------------------------------------------------------------------------------- grid
MODELS = {'enet': 'ENet', 'samed': 'samed', 'samed_fast': 'samed_fast', 'sam2unet': 'SAM2UNet'}  # grid prefix -> --model
SAM_BASE = {'samed': 'sam', 'samed_fast': 'sam', 'SAM2UNet': 'sam2'}   # which base checkpoint a model needs

@dataclass
class Experiment:
    "One entry of the grid: 04_train parameters (on top of the preset's), the runs it needs first, or nnU-Net"
    name: str
    params: dict = field(default_factory=dict)  # 04_train.ipynb parameters
    needs: tuple = ()                            # runs whose best.safetensors this one starts from
    kind: str = 'papermill'                      # 'papermill' (04_train + 05b_evaluate) or 'nnunet'

def experiment_grid()->dict:
    "name -> Experiment: 4 models × augment × normalize, the CRF variants of the plain ENet, nnU-Net 2d (the slowest)"
    grid = {}
    for prefix, model in MODELS.items():
        for aug, norm in product((False, True), repeat=2):
            name = prefix + '_aug'*aug + '_norm'*norm
            grid[name] = Experiment(name, dict(model=model, augment=aug, normalize=norm))
    crf = dict(model='ENet', augment=False, normalize=False)
    grid['enet_crf'] = Experiment('enet_crf', crf | dict(extra={'crf': True, 'from_checkpoint': '{runs}/enet/best.safetensors'}), ('enet',))
    grid['enet_crf_finetune'] = Experiment('enet_crf_finetune', crf | dict(extra={'crf': True, 'finetune_crf': True,
                                           'from_checkpoint': '{runs}/enet/best.safetensors'}), ('enet',))
    grid['nnunet_2d'] = Experiment('nnunet_2d', kind='nnunet')
    return grid

# ------------------------------------------------------------------------------------------------------------- presets
# split: slice_tree / split_patients arguments (test = the first `retains_test` of the validation block), shared by
# the 2D models' slicing and nnU-Net's export, so every model is scored on the same held-out test patients.
PRESETS = {
    'ci':  dict(phantom=dict(n_patients=5, shape=(48, 48), n_slices=12), split=dict(retains=2, retains_test=1),
                train=dict(dataset='PHANTOM', epochs=2, batch_size=4, lr=5e-3, loss='dce', use_scheduler=True, use_sampler=True,
                           deterministic=True, num_workers=0), gt_name='GT.nii.gz'),
    'cpu': dict(phantom=dict(n_patients=8, shape=(96, 96), n_slices=24), split=dict(retains=4, retains_test=2),
                train=dict(dataset='PHANTOM', epochs=4, batch_size=8, lr=5e-3, loss='dce', use_scheduler=True, use_sampler=True,
                           deterministic=True, num_workers=0), gt_name='GT.nii.gz'),
    # the study's 200 epochs, lr 5e-4, batch 8, scheduler and sampler; loss None = the study's (ce for ENet,
    # the SAMed loss for SAM models); SEGTHOR_MANUAL_SPLIT (train 28 / val 8 / test 01, 13, 22, 28)
    'gpu': dict(phantom=None, split=dict(retains=12, retains_test=4),
                train=dict(dataset='SEGTHOR_MANUAL_SPLIT', epochs=200, batch_size=8, lr=5e-4, loss=None, use_scheduler=True,
                           use_sampler=True, deterministic=True, num_workers=4, extra={'gpu': True, 'bf16': True}),
                gt_name='GT_fixed.nii.gz'),
}

@dataclass
class Setup:
    "Where a preset's data, base checkpoints and runs are (absolute paths)"
    preset: str
    runs: Path
    data_root: str          # sliced dataset (train/, val/, test/)
    source_dir: str|None    # SEGTHOR tree with the native labels (3D scoring, nnU-Net's export)
    gt_name: str
    sam: str|None           # SAM base checkpoint (samed, samed_fast)
    sam2: str|None          # SAM 2 checkpoint (SAM2UNet)
    sets: list              # --set overrides: (run name or None, key, value)

def make_setup(a)->Setup:
    "The paths of a preset: the generated phantom under <runs>/_data/<preset>, or the user's SEGTHOR (gpu)"
    runs = Path(a.runs_dir).resolve(); p = PRESETS[a.preset]
    sets = [parse_set(s) for s in a.set or []]
    if p['phantom'] is not None:
        d = runs/'_data'/a.preset
        return Setup(a.preset, runs, str(d/'PHANTOM'), str(d/'source'), p['gt_name'], str(d/'sam_tiny.safetensors'),
                     str(d/'hiera_tiny.safetensors'), sets)
    ab = lambda x: str(Path(x).resolve()) if x else None
    return Setup(a.preset, runs, ab(a.data_root) or '<--data_root>', ab(a.source_dir), a.gt_name or p['gt_name'],
                 ab(a.sam_checkpoint), ab(a.sam2_checkpoint), sets)

def parse_set(s:str)->tuple:
    "'[run.]key=value' -> (run or None, key, value parsed as JSON, else the string)"
    if '=' not in s: raise SystemExit(f"grid.py: --set {s!r}: expected KEY=VALUE or RUN.KEY=VALUE")
    key, raw = s.split('=', 1)
    run, key = key.split('.', 1) if '.' in key else (None, key)
    try: value = json.loads(raw)
    except json.JSONDecodeError: value = raw
    return run, key, value

def train_params(e:Experiment, s:Setup, dest:Path)->dict:
    "The 04_train.ipynb parameters of an experiment: the preset's, the experiment's, the base checkpoint, --set"
    p = dict(PRESETS[s.preset]['train']); extra = dict(p.pop('extra', {}))
    p |= {k: v for k, v in e.params.items() if k != 'extra'}
    extra |= {k: v.format(runs=s.runs) if isinstance(v, str) else v for k, v in e.params.get('extra', {}).items()}
    p |= dict(data_root=s.data_root, dest=str(dest)) | (dict(extra=extra) if extra else {})
    base = SAM_BASE.get(p['model'])
    if base: p['model_cfg'] = ({'size': 'tiny'} if PRESETS[s.preset]['phantom'] else {}) | {'checkpoint': getattr(s, base) or f'<--{base}_checkpoint>'}
    for run, k, v in s.sets:
        if run in (None, e.name):
            if k in NB_TRAIN_PARAMS: p[k] = v
            else: p['extra'] = {**p.get('extra', {}), k: v}
    return p

NB_TRAIN_PARAMS = ('dataset', 'data_root', 'dest', 'epochs', 'model', 'batch_size', 'lr', 'loss', 'optimizer', 'mode',
                   'use_scheduler', 'use_sampler', 'augment', 'augment_nnunet', 'normalize', 'deterministic', 'num_workers',
                   'val_every', 'resume', 'overwrite', 'model_cfg', 'phantom', 'extra')

def eval_params(s:Setup, run_dir:Path)->dict:
    "The 05b_evaluate.ipynb parameters: the run, its held-out test split, the native labels when known"
    p = dict(run_dir=str(run_dir), split='test')
    if s.source_dir: p |= dict(source_dir=s.source_dir, gt_name=s.gt_name)
    return p

def papermill_argv(nb:Path, out:Path, params:dict)->list:
    "papermill's command line: scalars with -p, dicts and None in one -y JSON object; cwd nbs/ for relative paths"
    argv = [PAPERMILL, str(nb), str(out), '--cwd', str(NBS), '--log-level', 'WARNING']
    scalars = {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and v in ('None', 'True', 'False'))}
    for k, v in scalars.items(): argv += ['-p', k, str(v)]
    rest = {k: v for k, v in params.items() if k not in scalars}
    if rest: argv += ['-y', json.dumps(rest)]
    return argv

def commands(e:Experiment, s:Setup, work:Path, a)->list:
    "The command lines of one papermill experiment, run in `work`"
    return [['mkdir', '-p', str(work/'eval')],
            papermill_argv(Path(a.nbs)/'04_train.ipynb', work/'04_train.ipynb', train_params(e, s, work)),
            papermill_argv(Path(a.nbs)/'05b_evaluate.ipynb', work/'eval'/'05b_evaluate.ipynb', eval_params(s, work))]

# -------------------------------------------------------------------------------------------------------------- nnU-Net
NNUNET_ID = 55

def nnunet_plan(s:Setup, work:Path)->dict:
    "nnU-Net 2d's steps for a preset: its command lines (tiny trainer, CPU, no TTA on a phantom; nnU-Net's own on a GPU)"
    from segthor_nb.nnunet import nnunet_commands, TINY_TRAINER
    cpu = PRESETS[s.preset]['phantom'] is not None
    raw = work/'nnunet'/'nnUNet_raw'/f'Dataset{NNUNET_ID:03d}_SEGTHOR'
    return nnunet_commands(NNUNET_ID, ('2d',), images=str(raw/'imagesTs'), pred_root=str(work/'predictions'),
                           trainer=TINY_TRAINER if cpu else 'nnUNetTrainer', device='cpu' if cpu else 'cuda',
                           processes=1 if cpu else None, tta=not cpu)

def run_nnunet_2d(s:Setup, work:Path, log)->None:
    "Export the source tree with our split, plan/train/predict nnU-Net 2d, score it into work/eval like a 05b evaluation"
    from segthor_nb.nnunet import export_nnunet, nnunet_env, run_nnunet, score_nnunet
    from segthor_nb.core import patient_dirs
    from segthor_nb.slicing import split_patients
    from segthor_nb.evaluate import write_results
    if not s.source_dir: raise RuntimeError("nnunet_2d needs --source_dir (the SEGTHOR tree with the fixed labels)")
    env = nnunet_env(work/'nnunet', processes=1 if PRESETS[s.preset]['phantom'] else 8)   # as `list` prints it
    split = split_patients([d.name for d in patient_dirs(s.source_dir)], seed=0, create_test=True, **PRESETS[s.preset]['split'])
    ds = export_nnunet(s.source_dir, env['nnUNet_raw'], NNUNET_ID, gt_name=s.gt_name, split=split,
                       preprocessed_root=env['nnUNet_preprocessed'])
    steps = nnunet_plan(s, work)
    for step in ('plan', 'train_2d', 'predict_2d'):
        log(f"{step}: {' '.join(steps[step])}")
        run_nnunet(steps[step], env, work/'logs'/f'{step}.log')
    long_df = score_nnunet(work/'predictions'/'2d', ds)
    write_results(long_df, work/'eval', '3d')
    trainer = steps['train_2d'][steps['train_2d'].index('-tr') + 1] if '-tr' in steps['train_2d'] else 'nnUNetTrainer'
    cfg = dict(model='nnU-Net 2d', configuration='2d', trainer=trainer, nnunet_dataset=ds.name, split=split,
               source_dir=s.source_dir, gt_name=s.gt_name, augment=False, normalize=False, crf=False)
    (work/'config.json').write_text(json.dumps(cfg, indent=2))

# ---------------------------------------------------------------------------------------------------------------- data
def prepare_data(s:Setup)->None:
    "Generate, once, the preset's phantom (SEGTHOR tree + sliced with a held-out test split) and tiny SAM base checkpoints"
    p = PRESETS[s.preset]
    if p['phantom'] is None: return
    import torch
    from segthor_nb.data_fix import write_phantom
    from segthor_nb.slicing import slice_tree
    from segthor_nb.models import save_weights
    from segthor_nb.sam import build_sam, Hiera, HIERA_CONFIGS
    src, ph = Path(s.source_dir), p['phantom']
    if not (src/'phantom.json').exists(): write_phantom(src, ph['n_patients'], ph['shape'], ph['n_slices'], seed=0)
    if not (Path(s.data_root)/'test'/'geometry.json').exists():
        slice_tree(src, s.data_root, ph['shape'], create_test=True, seed=0, progress=False, **p['split'])
    # tiny SAM / Hiera bases: random, but a file, so the frozen weights a LoRA/adapter checkpoint builds on are the
    # same at evaluation as in training (as the real SAM checkpoints are on a GPU box)
    for path, build in ((s.sam, lambda: build_sam('tiny', 3)), (s.sam2, lambda: Hiera(**HIERA_CONFIGS['tiny']))):
        if not Path(path).exists():
            torch.manual_seed(0); save_weights(build(), path)

# ----------------------------------------------------------------------------------------------------------------- run
def check_needs(e:Experiment, s:Setup)->None:
    for n in e.needs:
        if not (s.runs/n/'best.safetensors').exists(): raise RuntimeError(f"needs {s.runs/n/'best.safetensors'}: run {n} first")
    if e.kind == 'papermill':
        p = train_params(e, s, s.runs/e.name)
        missing = [v for v in (p.get('model_cfg', {}).get('checkpoint'), s.data_root) if str(v).startswith('<--')]
        if missing: raise RuntimeError(f"{missing[0][1:-1]} not given (preset {s.preset})")

def execute(e:Experiment, s:Setup, a)->None:
    "Run one experiment in <runs>/_work/<name>, then move it to <runs>/<name> (replacing an earlier run only now)"
    check_needs(e, s)
    work, final = s.runs/'_work'/e.name, s.runs/e.name
    shutil.rmtree(work, ignore_errors=True); (work/'eval').mkdir(parents=True)
    logf = open(work/'grid.log', 'a')
    log = lambda msg: (logf.write(msg + '\n'), logf.flush())
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        if e.kind == 'nnunet': run_nnunet_2d(s, work, log)
        else:
            for argv in commands(e, s, work, a)[1:]:
                log(shlex.join(argv))
                r = subprocess.run(argv, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.PIPE, text=True)
                logf.write(r.stderr)
                if r.returncode: raise RuntimeError(last_error(r.stderr, argv[2]))
        if not (work/'eval'/'results3d.csv').exists(): raise RuntimeError(f"{work/'eval'/'results3d.csv'}: not written")
    finally: logf.close()
    old = s.runs/'_work'/f'{e.name}.replaced'
    shutil.rmtree(old, ignore_errors=True)
    if final.exists(): os.rename(final, old)
    os.rename(work, final)
    shutil.rmtree(old, ignore_errors=True)

def last_error(stderr:str, out:str)->str:
    "The exception line papermill reports, with the executed notebook to look at"
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    err = next((l for l in reversed(lines) if ('Error' in l or 'Exception' in l) and not l.startswith(('File ', 'Cell '))), lines[-1] if lines else 'failed')
    return f"{err[:300]} (see {out})"

def selected(a, grid:dict)->list:
    "The experiments asked for, in grid order, with the runs they need added before them"
    if a.all: names = set(grid)
    else:
        unknown = [n for n in a.names if n not in grid]
        if unknown: raise SystemExit(f"grid.py: unknown experiment(s) {', '.join(unknown)}; `grid.py list` shows the grid")
        if not a.names: raise SystemExit("grid.py run: name experiments or pass --all")
        names = set(a.names)
    for n in list(names): names |= set(grid[n].needs)
    return [e for n, e in grid.items() if n in names]

def cmd_run(a)->int:
    s, grid = make_setup(a), experiment_grid()
    todo = selected(a, grid)
    if s.data_root.startswith('<--'): raise SystemExit(f"grid.py run --preset {s.preset}: --data_root is required")
    if bad := [r for r, _, _ in s.sets if r is not None and r not in grid]: raise SystemExit(f"grid.py: --set {bad[0]}.…: no such experiment")
    try: prepare_data(s)
    except Exception as e: raise SystemExit(f"grid.py: preparing the {s.preset} data in {s.runs/'_data'} failed: {type(e).__name__}: {e}")
    failed = 0
    for e in todo:
        done = (s.runs/e.name/'eval'/'results3d.csv').exists()
        if done and not a.overwrite:
            print(f"{e.name:<22} skipped   (has {s.runs/e.name/'eval'/'results3d.csv'}; --overwrite to redo)", flush=True); continue
        t0 = time.time()
        try:
            execute(e, s, a)
            print(f"{e.name:<22} done      {time.time() - t0:7.1f} s  {s.runs/e.name}", flush=True)
        except Exception as err:
            failed += 1
            print(f"{e.name:<22} FAILED    {time.time() - t0:7.1f} s  {str(err).splitlines()[0] if str(err) else type(err).__name__}", flush=True)
    if failed: print(f"{failed} of {len(todo)} runs failed; earlier results were left as they were", flush=True)
    return 1 if failed else 0

# ---------------------------------------------------------------------------------------------------------------- list
def cmd_list(a)->int:
    s, grid = make_setup(a), experiment_grid()
    print(f"# preset {s.preset}: runs in {s.runs}; data {s.data_root}" + (f"; native labels {s.source_dir}/train/*/{s.gt_name}" if s.source_dir else ''))
    if PRESETS[s.preset]['phantom']: print(f"# (`grid.py run` first generates the phantom and the tiny SAM/SAM 2 base checkpoints under {s.runs/'_data'/s.preset})")
    print(f"# `grid.py run` executes each block in {s.runs/'_work'}/<name> and moves it to {s.runs}/<name> when it succeeded\n")
    for e in grid.values():
        work = s.runs/e.name
        print(f"## {e.name}" + (f"  (needs {', '.join(e.needs)})" if e.needs else '') + ('  (the slowest entry)' if e.kind == 'nnunet' else ''))
        if e.kind == 'nnunet':
            nn = work/'nnunet'; procs = 1 if PRESETS[s.preset]['phantom'] else 8
            print(f"export nnUNet_raw={nn}/nnUNet_raw nnUNet_preprocessed={nn}/nnUNet_preprocessed nnUNet_results={nn}/nnUNet_results "
                  f"nnUNet_extTrainer={nn}/trainers nnUNet_n_proc_DA={procs} nnUNet_def_n_proc={procs}"
                  "  # trainers/: segthor_nb.nnunet.write_trainer_dir")
            print(f"segthor-nnunet-export {shlex.quote(str(s.source_dir))} --raw_root {work}/nnunet/nnUNet_raw --preprocessed_root "
                  f"{work}/nnunet/nnUNet_preprocessed --dataset_id {NNUNET_ID} --gt_name {s.gt_name} "
                  + ' '.join(f'--{k} {v}' for k, v in PRESETS[s.preset]['split'].items()))
            for step, argv in nnunet_plan(s, work).items():
                if step in ('plan', 'train_2d', 'predict_2d'): print(shlex.join(argv))
            print(f"segthor-test3dnnunet --pred_dir {work}/predictions/2d --gt_root {work}/nnunet/nnUNet_raw/Dataset{NNUNET_ID:03d}_SEGTHOR "
                  f"--out {work}/eval/results3d.csv\n")
            continue
        for argv in commands(e, s, work, a): print(shlex.join(argv))
        print()
    return 0

# ----------------------------------------------------------------------------------------------------------- aggregate
def cmd_aggregate(a)->int:
    from segthor_nb.core import SegthorError, atomic_path, md_table
    from segthor_nb.interpret import collect_runs, runs_table, ablation_grid, write_runs_figures
    runs, dest = Path(a.runs_dir).resolve(), Path(a.dest or Path(a.runs_dir)/'report').resolve()
    report = dest/'report.md'
    if report.exists() and not a.overwrite: raise SystemExit(f"grid.py aggregate: {report} exists; pass --overwrite to rebuild the report")
    try:
        df = collect_runs(runs)
        table, grid = runs_table(df), ablation_grid(df)
        figures = write_runs_figures(df, dest, overwrite=a.overwrite)
    except (SegthorError, FileExistsError) as e: raise SystemExit(f"grid.py aggregate: {e}")
    d3 = df[df['slice'].isna()]
    missing = [n for n in experiment_grid() if n not in set(df['run'])]
    n_pat = d3.groupby('run')['patient'].nunique()
    lines = [f"# The study's table, from {len(table)} evaluated run(s) in {runs}", '',
             f"Mean 3D Dice per organ on the held-out test patients ({', '.join(sorted(d3['patient'].unique()))}), native grid, "
             f"mean over the organs; best first. Patients per run: {', '.join(f'{k} {v}' for k, v in n_pat.items())}.", '',
             md_table(table), '## Ablation: mean foreground Dice, model × normalize × augment (runs without CRF)', '',
             md_table(grid.rename(columns={False: 'no augment', True: 'augment'})), '## Figures', '', *[f"![{n}]({p.name})" for n, p in figures.items()], '',
             f"Grid entries without results: {', '.join(missing) if missing else 'none'}.", '']
    dest.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest/'table.csv'); grid.to_csv(dest/'ablation.csv')
    with atomic_path(report) as tmp: tmp.write_text('\n'.join(lines))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} runs; report {report}; figures {', '.join(p.name for p in figures.values())}")
    return 0

# ----------------------------------------------------------------------------------------------------------------- CLI
def parser()->argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog='runs/grid.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest='cmd', required=True)
    def common(p):
        p.add_argument('--runs_dir', '--runs-dir', default=str(ROOT/'runs'), help='folder of run folders (default: runs/ of the repo)')
    def preset(p):
        p.add_argument('--preset', choices=list(PRESETS), default='cpu',
                       help='cpu: a phantom generated once into <runs_dir>/_data, 4 epochs, tiny SAM models; ci: smaller still; '
                            "gpu: real SEGTHOR, the study's 200 epochs and batch 8, --data_root required (default: cpu)")
        p.add_argument('--data_root', '--data-root', help='gpu: sliced SEGTHOR_MANUAL_SPLIT root (train/, val/, test/ = Patient_01, 13, 22, 28)')
        p.add_argument('--source_dir', '--source-dir', help='gpu: SEGTHOR tree with the fixed labels (native-grid 3D scoring; nnU-Net)')
        p.add_argument('--gt_name', '--gt-name', help='gpu: label file in source_dir (default GT_fixed.nii.gz)')
        p.add_argument('--sam_checkpoint', '--sam-checkpoint', help='gpu: SAM ViT-B checkpoint (sam_vit_b_01ec64.pth) for samed, samed_fast')
        p.add_argument('--sam2_checkpoint', '--sam2-checkpoint', help='gpu: SAM 2 checkpoint (sam2_hiera_large.pt) for SAM2UNet')
        p.add_argument('--set', action='append', metavar='[RUN.]KEY=VALUE',
                       help='override a 04_train parameter (or TrainConfig field, into extra) for all runs or one, e.g. epochs=10; VALUE is JSON or a string')
        p.add_argument('--nbs', default=str(NBS), help='folder with 04_train.ipynb and 05b_evaluate.ipynb (default: nbs/; papermill runs with cwd nbs/)')
    p = sub.add_parser('list', help='print the commands of every experiment'); common(p); preset(p)
    p = sub.add_parser('run', help='run experiments (skipping those with eval/results3d.csv)'); common(p); preset(p)
    p.add_argument('names', nargs='*', help='experiments (see list); the runs they need are added')
    p.add_argument('--all', action='store_true', help='the whole grid')
    p.add_argument('--overwrite', action='store_true', help='redo runs that have results (replaced only when the new run succeeds)')
    p = sub.add_parser('aggregate', help="the paper's table and figures from every evaluated run"); common(p)
    p.add_argument('--dest', help='report folder (default: <runs_dir>/report)')
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing report')
    return top

def main(argv=None)->int:
    a = parser().parse_args(argv)
    return dict(list=cmd_list, run=cmd_run, aggregate=cmd_aggregate)[a.cmd](a)

if __name__ == '__main__': sys.exit(main())
