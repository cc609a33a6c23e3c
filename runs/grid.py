#!/usr/bin/env python
"""The study's experiment grid as Optuna studies (segthor_nb.tune), and the paper's table from them.

The grid is one named search space, STUDY_GRID — model x augment x normalize, 16 points — run as the Optuna study
grid-<preset>: each point is a trial, a papermill run of nbs/04_train.ipynb, then of nbs/05b_evaluate.ipynb on the
held-out test split, in <runs_dir>/grid-<preset>/<trial number>/. The CRF variants of the plain ENet start from that
trial's checkpoint and form a second study, crf-<preset> (finetune_crf False/True). nnU-Net 2d runs its own pipeline
(segthor_nb.nnunet) into <runs_dir>/nnunet_2d/. A study resumes where it stopped, and several machines share it when
they run the same command with one --storage URL (PostgreSQL; default: the SQLite file <runs_dir>/optuna.db).

  python runs/grid.py list [--preset cpu|gpu|ci]                     the segthor-tune commands and the nnU-Net steps
  python runs/grid.py run grid crf nnunet_2d | --all [--preset ...]   run them (finished trials are not run again)
  python runs/grid.py aggregate [--preset cpu] [--dest runs/report]   the paper's table from the studies and run folders,
                                                                      the study's figures and Optuna's
"""
from __future__ import annotations
import argparse, json, os, shlex, shutil, sys, time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

# ---------------------------------------------------------------------------------------------------------------- grid
MODELS = {'enet': 'ENet', 'samed': 'samed', 'samed_fast': 'samed_fast', 'sam2unet': 'SAM2UNet'}  # name prefix -> --model
SAM_BASE = {'samed': 'sam', 'samed_fast': 'sam', 'SAM2UNet': 'sam2'}   # which base checkpoint a model needs
STUDY_GRID = {'model': list(MODELS.values()), 'augment': [False, True], 'normalize': [False, True]}   # the named search space
CRF_GRID = {'finetune_crf': [False, True]}   # the CRF variants of the plain ENet (augment, normalize False)
PLAIN_ENET = {'model': 'ENet', 'augment': False, 'normalize': False}
PARTS = ('grid', 'crf', 'nnunet_2d')

def run_name(params:dict)->str:
    "An experiment's name: enet, samed_fast_aug_norm, ... for a grid trial; enet_crf(_finetune) for a CRF trial"
    if 'finetune_crf' in params: return 'enet_crf' + '_finetune'*params['finetune_crf']
    return {v: k for k, v in MODELS.items()}[params['model']] + '_aug'*params['augment'] + '_norm'*params['normalize']

def experiment_names()->list:
    "Every experiment of the study, in grid order"
    return [run_name(dict(zip(STUDY_GRID, v))) for v in product(*STUDY_GRID.values())] + [run_name(dict(finetune_crf=f)) for f in (False, True)] + ['nnunet_2d']

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
    "Where a preset's data, base checkpoints, runs and studies are (absolute paths)"
    preset: str
    runs: Path
    storage: str            # Optuna storage URL
    data_root: str          # sliced dataset (train/, val/, test/)
    source_dir: str|None    # SEGTHOR tree with the native labels (3D scoring, nnU-Net's export)
    gt_name: str
    sam: str|None           # SAM base checkpoint (samed, samed_fast)
    sam2: str|None          # SAM 2 checkpoint (SAM2UNet)
    sets: dict              # --set overrides of TrainConfig fields, for every trial

def make_setup(a)->Setup:
    "The paths of a preset: the generated phantom under <runs>/_data/<preset>, or the user's SEGTHOR (gpu)"
    runs = Path(a.runs_dir).resolve(); p = PRESETS[a.preset]
    storage = getattr(a, 'storage', None) or f"sqlite:///{runs/'optuna.db'}"
    sets = dict(parse_set(s) for s in getattr(a, 'set', None) or [])
    if p['phantom'] is not None:
        d = runs/'_data'/a.preset
        return Setup(a.preset, runs, storage, str(d/'PHANTOM'), str(d/'source'), p['gt_name'], str(d/'sam_tiny.safetensors'),
                     str(d/'hiera_tiny.safetensors'), sets)
    ab = lambda x: str(Path(x).resolve()) if x else None
    return Setup(a.preset, runs, storage, ab(a.data_root) or '<--data_root>', ab(a.source_dir), a.gt_name or p['gt_name'],
                 ab(a.sam_checkpoint), ab(a.sam2_checkpoint), sets)

def parse_set(s:str)->tuple:
    "'key=value' -> (key, value parsed as JSON, else the string)"
    if '=' not in s: raise SystemExit(f"grid.py: --set {s!r}: expected KEY=VALUE (a TrainConfig field)")
    key, raw = s.split('=', 1)
    try: return key, json.loads(raw)
    except json.JSONDecodeError: return key, raw

def fixed_fields(s:Setup)->dict:
    "The TrainConfig fields every grid trial shares: the preset's training, the data, --set"
    p = dict(PRESETS[s.preset]['train']); extra = p.pop('extra', {})
    return {k: v for k, v in {**p, **extra, 'data_root': s.data_root, **s.sets}.items() if v is not None}

def model_settings(s:Setup)->dict:
    "tune's `when`: each SAM model's base checkpoint (tiny and random on a phantom)"
    tiny = {'size': 'tiny'} if PRESETS[s.preset]['phantom'] else {}
    return {'model': {m: {'model_cfg': tiny | {'checkpoint': getattr(s, base) or f'<--{base}_checkpoint>'}} for m, base in SAM_BASE.items()}}

def plain_enet_trial(s:Setup):
    "The grid study's complete trial of the plain ENet (the CRF variants start from its checkpoint), or None"
    import optuna
    from segthor_nb.tune import storage_url
    try: study = optuna.load_study(study_name=f'grid-{s.preset}', storage=storage_url(s.storage, s.runs))
    except KeyError: return None
    return next((t for t in study.get_trials(deepcopy=False) if t.state.name == 'COMPLETE' and t.params == PLAIN_ENET), None)

def crf_fixed(s:Setup, enet_run:str)->dict:
    "The CRF variants' shared fields: the plain ENet's, from its checkpoint, with a CRF"
    return fixed_fields(s) | PLAIN_ENET | {'crf': True, 'from_checkpoint': str(Path(enet_run)/'best.safetensors')}

def tune_settings(s:Setup, part:str, a)->dict:
    "tune's settings for a part: its folder and study, the storage, the test split's evaluation, the runner"
    return dict(dest=str(s.runs/f'{part}-{s.preset}'), storage=s.storage, source_dir=s.source_dir, gt_name=s.gt_name,
                eval_splits=('test',), runner=a.runner, nbs=a.nbs, prune=False)   # every experiment of the table runs to its end

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
def check_setup(s:Setup, parts:list)->None:
    "The paths a preset needs for these parts given (gpu: the user's data and base checkpoints)"
    needed = [s.data_root, s.source_dir or '<--source_dir>'] + ([s.sam or '<--sam_checkpoint>', s.sam2 or '<--sam2_checkpoint>'] if 'grid' in parts else [])
    if missing := [v for v in needed if str(v).startswith('<--')]: raise SystemExit(f"grid.py run --preset {s.preset}: {missing[0][1:-1]} is required")

def run_grid(s:Setup, a)->int:
    "The study's grid: one Optuna study over STUDY_GRID; 1 if a trial did not complete"
    from segthor_nb.tune import tune
    space = dict(sampler='grid', space=STUDY_GRID, when=model_settings(s))         # the file `list` names, for segthor-tune
    s.runs.mkdir(parents=True, exist_ok=True); (s.runs/f'grid-{s.preset}.json').write_text(json.dumps(space, indent=1))
    study = tune(STUDY_GRID, fixed_fields(s), 'grid', model_settings(s), **tune_settings(s, 'grid', a))
    return report_trials(study, 'grid')

def run_crf(s:Setup, a)->int:
    "The CRF variants: a second study, from the grid's plain ENet"
    from segthor_nb.tune import tune
    t = plain_enet_trial(s)
    if t is None: print(f"crf: needs the grid's plain ENet ({PLAIN_ENET}) complete in study grid-{s.preset}: run the grid first"); return 1
    return report_trials(tune(CRF_GRID, crf_fixed(s, t.user_attrs['run_dir']), 'grid', **tune_settings(s, 'crf', a)), 'crf')

def report_trials(study, part:str)->int:
    "One line per experiment of a finished study; 1 if one has no complete trial"
    done = {run_name(t.params): t for t in study.get_trials(deepcopy=False) if t.state.name == 'COMPLETE'}
    names = [run_name(dict(zip(study.user_attrs['search']['space'], v))) for v in product(*study.user_attrs['search']['space'].values())]
    for n in names: print(f"{n:<22} {'done' if n in done else 'FAILED':<9} {done[n].user_attrs['run_dir'] if n in done else '(see the trials in ' + study.study_name + ')'}", flush=True)
    return int(any(n not in done for n in names))

def run_nnunet(s:Setup, a)->int:
    "nnU-Net 2d in <runs>/_work/nnunet_2d, moved to <runs>/nnunet_2d when it succeeded (an earlier result replaced only then)"
    work, final = s.runs/'_work'/'nnunet_2d', s.runs/'nnunet_2d'
    if (final/'eval'/'results3d.csv').exists() and not a.overwrite:
        print(f"{'nnunet_2d':<22} skipped   (has {final/'eval'/'results3d.csv'}; --overwrite to redo)"); return 0
    shutil.rmtree(work, ignore_errors=True); (work/'eval').mkdir(parents=True); t0 = time.time()
    try:
        with open(work/'grid.log', 'a') as logf: run_nnunet_2d(s, work, lambda msg: (logf.write(msg + '\n'), logf.flush()))
    except Exception as e:
        print(f"{'nnunet_2d':<22} FAILED    {time.time() - t0:7.1f} s  {str(e).splitlines()[0] if str(e) else type(e).__name__} (see {work})"); return 1
    old = s.runs/'_work'/'nnunet_2d.replaced'; shutil.rmtree(old, ignore_errors=True)
    if final.exists(): os.rename(final, old)
    os.rename(work, final); shutil.rmtree(old, ignore_errors=True)
    print(f"{'nnunet_2d':<22} done      {time.time() - t0:7.1f} s  {final}"); return 0

def cmd_run(a)->int:
    s = make_setup(a)
    parts = list(PARTS) if a.all else a.parts
    if not parts: raise SystemExit("grid.py run: name the parts (grid, crf, nnunet_2d) or pass --all")
    if bad := [p for p in parts if p not in PARTS]: raise SystemExit(f"grid.py run: unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    check_setup(s, parts)
    try: prepare_data(s)
    except Exception as e: raise SystemExit(f"grid.py: preparing the {s.preset} data in {s.runs/'_data'} failed: {type(e).__name__}: {e}")
    from segthor_nb.core import SegthorError
    failed = 0
    for part in [p for p in PARTS if p in parts]:
        try: failed += dict(grid=run_grid, crf=run_crf, nnunet_2d=run_nnunet)[part](s, a)
        except SegthorError as e: raise SystemExit(f"grid.py run {part}: {e}")
    if failed: print(f"{failed} part(s) with experiments that did not complete; the studies keep every trial (aggregate lists what is missing)")
    return 1 if failed else 0

# ---------------------------------------------------------------------------------------------------------------- list
def tune_flags(fixed:dict)->list:
    "segthor-tune's flags for TrainConfig fields (values that are TrainConfig's defaults are left out)"
    from segthor_nb.core import TrainConfig
    base, out = TrainConfig(), []
    for k, v in fixed.items():
        if v == getattr(base, k, object()): continue
        if isinstance(v, bool): out += [f'--{k}'] if v else [f'--no_{k}']
        else: out += [f'--{k}', json.dumps(v) if isinstance(v, dict) else str(v)]
    return out

def cmd_list(a)->int:
    s = make_setup(a)
    common = lambda part: ['--storage', s.storage, '--dest', str(s.runs/f'{part}-{s.preset}'), '--source_dir', str(s.source_dir or '<--source_dir>'),
                           '--gt_name', s.gt_name, '--eval_splits', 'test', '--no_prune']
    space = dict(sampler='grid', space=STUDY_GRID, when=model_settings(s))
    print(f"# preset {s.preset}: Optuna studies grid-{s.preset}, crf-{s.preset} in {s.storage}; data {s.data_root}")
    if PRESETS[s.preset]['phantom']: print(f"# (`grid.py run` first generates the phantom and the tiny SAM/SAM 2 base checkpoints under {s.runs/'_data'/s.preset})")
    print("# the same command on several machines with one --storage URL (postgresql://...) shares a study\n")
    print(f"## grid: the named search space STUDY_GRID, {len(list(product(*STUDY_GRID.values())))} trials; {s.runs/f'grid-{s.preset}.json'} (`grid.py run` writes it):")
    print(f"# {json.dumps(space)}")
    print(shlex.join(['segthor-tune', '--space', str(s.runs/f'grid-{s.preset}.json'), *common('grid'), *tune_flags(fixed_fields(s))]) + '\n')
    print(f"## crf: the CRF variants, from the grid's plain ENet ({', '.join(f'{k}={v}' for k, v in PLAIN_ENET.items())}; its trial folder: see `grid.py run`)")
    grid = [f"{k}={','.join(map(str, v))}" for k, v in CRF_GRID.items()]
    print(shlex.join(['segthor-tune', '--grid', *grid, *common('crf'), *tune_flags(crf_fixed(s, '<the plain ENet trial folder>'))]) + '\n')
    work = s.runs/'nnunet_2d'; nn = work/'nnunet'; procs = 1 if PRESETS[s.preset]['phantom'] else 8
    print("## nnunet_2d (its own pipeline; the slowest entry)")
    print(f"export nnUNet_raw={nn}/nnUNet_raw nnUNet_preprocessed={nn}/nnUNet_preprocessed nnUNet_results={nn}/nnUNet_results "
          f"nnUNet_extTrainer={nn}/trainers nnUNet_n_proc_DA={procs} nnUNet_def_n_proc={procs}  # trainers/: segthor_nb.nnunet.write_trainer_dir")
    print(f"segthor-nnunet-export {shlex.quote(str(s.source_dir))} --raw_root {nn}/nnUNet_raw --preprocessed_root {nn}/nnUNet_preprocessed "
          f"--dataset_id {NNUNET_ID} --gt_name {s.gt_name} " + ' '.join(f'--{k} {v}' for k, v in PRESETS[s.preset]['split'].items()))
    for step, argv in nnunet_plan(s, work).items():
        if step in ('plan', 'train_2d', 'predict_2d'): print(shlex.join(argv))
    print(f"segthor-test3dnnunet --pred_dir {work}/predictions/2d --gt_root {nn}/nnUNet_raw/Dataset{NNUNET_ID:03d}_SEGTHOR --out {work}/eval/results3d.csv")
    return 0

# ----------------------------------------------------------------------------------------------------------- aggregate
def collect(s:Setup)->tuple:
    "The evaluated runs of a preset as one long table (run = experiment name), and its studies"
    import optuna, pandas as pd
    from segthor_nb.tune import storage_url
    from segthor_nb.interpret import read_run
    frames, studies = [], {}
    for part in ('grid', 'crf'):
        try: studies[part] = optuna.load_study(study_name=f'{part}-{s.preset}', storage=storage_url(s.storage, s.runs))
        except KeyError: continue
        for t in studies[part].get_trials(deepcopy=False):
            run = Path(t.user_attrs.get('run_dir', '-'))
            if t.state.name == 'COMPLETE' and (run/'eval'/'results3d.csv').is_file(): frames.append(read_run(run).assign(run=run_name(t.params)))
    if (s.runs/'nnunet_2d'/'eval'/'results3d.csv').is_file(): frames.append(read_run(s.runs/'nnunet_2d'))
    if not frames: raise SystemExit(f"grid.py aggregate: no evaluated run for preset {s.preset} in {s.storage} or {s.runs/'nnunet_2d'} (run the grid first)")
    return pd.concat(frames, ignore_index=True), studies

def cmd_aggregate(a)->int:
    from segthor_nb.core import SegthorError, atomic_path, md_table
    from segthor_nb.interpret import runs_table, ablation_grid, write_runs_figures
    from segthor_nb.tune import trials_table, tune_figures
    s = make_setup(a); dest = Path(a.dest or s.runs/'report').resolve(); report = dest/'report.md'
    if report.exists() and not a.overwrite: raise SystemExit(f"grid.py aggregate: {report} exists; pass --overwrite to rebuild the report")
    df, studies = collect(s)
    try: table, grid, figures = runs_table(df), ablation_grid(df), write_runs_figures(df, dest, overwrite=a.overwrite)
    except (SegthorError, FileExistsError) as e: raise SystemExit(f"grid.py aggregate: {e}")
    optuna_figs = tune_figures(studies['grid'], dest) if 'grid' in studies else {}
    d3 = df[df['slice'].isna()]; missing = [n for n in experiment_names() if n not in set(df['run'])]
    n_pat = d3.groupby('run')['patient'].nunique()
    trials = {p: trials_table(st).drop(columns=['worker', 'run_dir'], errors='ignore') for p, st in studies.items()}
    lines = [f"# The study's table, from {len(table)} evaluated run(s) of preset {s.preset}", '',
             f"Mean 3D Dice per organ on the held-out test patients ({', '.join(sorted(d3['patient'].unique()))}), native grid, "
             f"mean over the organs; best first. Patients per run: {', '.join(f'{k} {v}' for k, v in n_pat.items())}.", '',
             md_table(table), '## Ablation: mean foreground Dice, model × normalize × augment (runs without CRF)', '',
             md_table(grid.rename(columns={False: 'no augment', True: 'augment'})), '## Figures', '', *[f"![{n}]({p.name})" for n, p in figures.items()], '',
             f"## The Optuna studies ({s.storage}): validation 3D Dice of each trial (the objective; the table above is the test split)", '',
             *[f"### {studies[p].study_name}\n\n{md_table(t, 4)}" for p, t in trials.items()], *[f"![{n}]({p.name})" for n, p in optuna_figs.items()], '',
             f"Grid entries without results: {', '.join(missing) if missing else 'none'}.", '']
    dest.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest/'table.csv'); grid.to_csv(dest/'ablation.csv')
    with atomic_path(report) as tmp: tmp.write_text('\n'.join(lines))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} runs; report {report}; figures {', '.join(p.name for p in [*figures.values(), *optuna_figs.values()])}")
    return 0

# ----------------------------------------------------------------------------------------------------------------- CLI
def parser()->argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog='runs/grid.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest='cmd', required=True)
    def common(p):
        p.add_argument('--runs_dir', '--runs-dir', default=str(ROOT/'runs'), help='folder of the studies, their trial folders and the data (default: runs/ of the repo)')
        p.add_argument('--preset', choices=list(PRESETS), default='cpu',
                       help='cpu: a phantom generated once into <runs_dir>/_data, 4 epochs, tiny SAM models; ci: smaller still; '
                            "gpu: real SEGTHOR, the study's 200 epochs and batch 8, --data_root and --source_dir required (default: cpu)")
        p.add_argument('--storage', help='Optuna storage URL shared by every machine running the grid (default: sqlite:///<runs_dir>/optuna.db)')
    def preset(p):
        p.add_argument('--data_root', '--data-root', help='gpu: sliced SEGTHOR_MANUAL_SPLIT root (train/, val/, test/ = Patient_01, 13, 22, 28)')
        p.add_argument('--source_dir', '--source-dir', help='gpu: SEGTHOR tree with the fixed labels (native-grid 3D scoring; nnU-Net)')
        p.add_argument('--gt_name', '--gt-name', help='gpu: label file in source_dir (default GT_fixed.nii.gz)')
        p.add_argument('--sam_checkpoint', '--sam-checkpoint', help='gpu: SAM ViT-B checkpoint (sam_vit_b_01ec64.pth) for samed, samed_fast')
        p.add_argument('--sam2_checkpoint', '--sam2-checkpoint', help='gpu: SAM 2 checkpoint (sam2_hiera_large.pt) for SAM2UNet')
        p.add_argument('--set', action='append', metavar='KEY=VALUE', help='a TrainConfig field for every trial, e.g. epochs=10; VALUE is JSON or a string')
        p.add_argument('--runner', choices=['papermill', 'fork'], default='papermill',
                       help="papermill: each trial's executed 04_train/05b notebooks kept (default); fork: train() in a forked process, faster")
        p.add_argument('--nbs', default=str(NBS), help='folder with 04_train.ipynb and 05b_evaluate.ipynb (default: nbs/)')
    p = sub.add_parser('list', help='print the segthor-tune commands of the grid and the nnU-Net steps'); common(p); preset(p)
    p = sub.add_parser('run', help='run parts of the study (a study resumes; finished trials are not run again)'); common(p); preset(p)
    p.add_argument('parts', nargs='*', help=f"any of {', '.join(PARTS)} (crf needs the grid's plain ENet)")
    p.add_argument('--all', action='store_true', help='every part')
    p.add_argument('--overwrite', action='store_true', help='nnunet_2d: redo a run that has results (replaced only when the new run succeeds)')
    p = sub.add_parser('aggregate', help="the paper's table and figures from the studies' evaluated trials and nnU-Net"); common(p)
    p.add_argument('--dest', help='report folder (default: <runs_dir>/report)')
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing report')
    return top

def main(argv=None)->int:
    a = parser().parse_args(argv)
    return dict(list=cmd_list, run=cmd_run, aggregate=cmd_aggregate)[a.cmd](a)

if __name__ == '__main__': sys.exit(main())
