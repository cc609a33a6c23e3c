#!/usr/bin/env python
"""The study's complete experiment grid as Optuna studies (segthor_nb.tune), and the paper's table from them.

Every run of the study's results table, in five parts:
  grid       ENet, samed (r 6), samed_fast, SAM2UNet x augment x normalize: the named search space STUDY_GRID, 16 points
  samed_r4   samed at LoRA rank 4: none and aug+norm (the two the study ran)
  crf        enet_aug and samed_fast_aug with a CRF, each from its grid trial's checkpoint (the study's two CRF runs)
  ensemble   samed_fast + samed_fast_aug as one model (`segthor-test3d --model ensemble`), per-class weights from
             their validation 3D Dice (the study's test.py hard-coded these two checkpoints)
  nnunet     nnU-Net 2d, 3d_lowres and 3d_fullres (segthor_nb.nnunet), on the same held-out test patients
Each point of a study is a trial: a papermill run of nbs/04_train.ipynb, then of nbs/05b_evaluate.ipynb on the
held-out test split, in <runs_dir>/<part>-<preset>/<trial number>/. `--seeds` and `--folds` repeat every
configuration (the seed and the split's validation block become grid parameters); `aggregate` pools the replicates
of each experiment and reports their spread. A study resumes where it stopped, and several machines share it when
they run the same command with one --storage URL (PostgreSQL; default: the SQLite file <runs_dir>/optuna.db).

  python runs/grid.py list [--preset smoke|cpu|gpu|ci]                 the segthor-tune commands and the other steps
  python runs/grid.py run grid samed_r4 crf ensemble nnunet | --all    run them (finished trials are not run again)
  python runs/grid.py aggregate [--preset cpu] [--dest runs/report]    the paper's table from the studies and run folders
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
SAMED_R4 = dict(space={'augment': [False, True]}, when={'augment': {True: {'normalize': True}}},   # none, aug+norm
                fixed={'model': 'samed', 'r': 4})
CRF_OF = ('enet_aug', 'samed_fast_aug')          # the study's CRF runs: these grid runs, with a CRF, from their checkpoints
ENSEMBLE_OF = ('samed_fast', 'samed_fast_aug')   # the study's test.py ensemble: samed_fast r6, none and aug
NNUNET_CONFIGS = ('2d', '3d_lowres', '3d_fullres')
PARTS = ('grid', 'samed_r4', 'crf', 'ensemble', 'nnunet')
SOURCE_FIELDS = ('model', 'augment', 'normalize', 'model_cfg', 'r', 'data_root', 'seed')   # what a CRF run keeps of its source

def experiment_name(cfg:dict)->str:
    "An experiment's name from its training settings: enet, samed_r4_aug_norm, samed_fast_aug_crf, ..."
    model = cfg.get('model')
    base = {v: k for k, v in MODELS.items()}.get(model, str(model).lower()) + ('_r4' if model == 'samed' and cfg.get('r') == 4 else '')
    return base + '_aug'*bool(cfg.get('augment')) + '_norm'*bool(cfg.get('normalize')) + '_crf'*bool(cfg.get('crf'))

def experiment_names()->list:
    "Every run of the study's results table, in grid order"
    grid = [experiment_name(dict(zip(STUDY_GRID, v))) for v in product(*STUDY_GRID.values())]
    r4 = [experiment_name(SAMED_R4['fixed'] | {'augment': a, 'normalize': a}) for a in SAMED_R4['space']['augment']]
    return grid + r4 + [f'{n}_crf' for n in CRF_OF] + ['ensemble'] + [f'nnunet_{c}' for c in NNUNET_CONFIGS]

# ------------------------------------------------------------------------------------------------------------- presets
# split: slice_tree / split_patients arguments (test = the first `retains_test` of the validation block), shared by
# the 2D models' slicing and nnU-Net's export, so every model is scored on the same held-out test patients.
# model_train: TrainConfig fields per model (tune's `when`), e.g. fewer epochs where a model cannot learn anyway.
_PHANTOM_TRAIN = dict(dataset='PHANTOM', batch_size=8, lr=5e-3, loss='dce', use_scheduler=True, use_sampler=True, deterministic=True, num_workers=0)
PRESETS = {
    'ci':    dict(phantom=dict(n_patients=5, shape=(48, 48), n_slices=12), split=dict(retains=2, retains_test=1),
                  train=_PHANTOM_TRAIN | dict(epochs=2, batch_size=4), model_train={}, gt_name='GT.nii.gz'),
    # plumbing only: every run of the grid in ~20 min on 2 cores; the numbers mean nothing
    'smoke': dict(phantom=dict(n_patients=8, shape=(96, 96), n_slices=24), split=dict(retains=4, retains_test=2),
                  train=_PHANTOM_TRAIN | dict(epochs=4), model_train={}, gt_name='GT.nii.gz'),
    # ≤ 60 min on 2 cores, where ENet and SAM2UNet learn (a measured ENet: see runs/README.md); the SAMed models sit on a
    # random tiny SAM base here and cannot learn, so they get 2 epochs of plumbing and the report says so
    'cpu':   dict(phantom=dict(n_patients=10, shape=(96, 96), n_slices=32), split=dict(retains=4, retains_test=2),
                  train=_PHANTOM_TRAIN | dict(epochs=30), model_train={'samed': {'epochs': 2}, 'samed_fast': {'epochs': 2}},
                  gt_name='GT.nii.gz'),
    # the study's 200 epochs, lr 5e-4, batch 8, scheduler and sampler; loss None = the study's (ce for ENet,
    # the SAMed loss for SAM models); SEGTHOR_MANUAL_SPLIT (train 28 / val 8 / test 01, 13, 22, 28)
    'gpu':   dict(phantom=None, split=dict(retains=12, retains_test=4),
                  train=dict(dataset='SEGTHOR_MANUAL_SPLIT', epochs=200, batch_size=8, lr=5e-4, loss=None, use_scheduler=True,
                             use_sampler=True, deterministic=True, num_workers=4, extra={'gpu': True, 'bf16': True}),
                  model_train={}, gt_name='GT_fixed.nii.gz'),
}
CANNOT_LEARN = ('samed', 'samed_fast')   # on a phantom preset: a random, frozen tiny SAM image encoder

@dataclass
class Setup:
    "Where a preset's data, base checkpoints, runs and studies are (absolute paths), and its replicates"
    preset: str
    runs: Path
    storage: str            # Optuna storage URL
    data_roots: dict        # fold -> sliced dataset (train/, val/, test/)
    source_dir: str|None    # SEGTHOR tree with the native labels (3D scoring, nnU-Net's export)
    gt_name: str
    sam: str|None           # SAM base checkpoint (samed, samed_fast)
    sam2: str|None          # SAM 2 checkpoint (SAM2UNet)
    sets: dict              # --set overrides of TrainConfig fields, for every trial
    seeds: list|None        # training seeds (None: TrainConfig's, 2024 under deterministic)
    tag: str = ''           # '-s0_1_2-f0_1' when --seeds / --folds are given: a study of its own
    @property
    def data_root(self)->str: return self.data_roots[min(self.data_roots)]
    def fold_of(self, root:str)->int: return next((f for f, r in self.data_roots.items() if str(r) == str(root)), 0)

def fold_roots(root:str, folds:list, gpu:bool)->dict:
    "fold -> sliced dataset: <root> for fold 0, <root>_fold<k> on a phantom; the user's --data_root with {fold} on gpu"
    if '{fold}' in root: return {f: root.format(fold=f) for f in folds}
    if gpu and folds != [0]: raise SystemExit("grid.py: --folds on gpu needs --data_root with {fold} in it (one sliced dataset per fold)")
    return {f: root if f == 0 else f'{root}_fold{f}' for f in folds}

def make_setup(a)->Setup:
    "The paths of a preset: the generated phantom under <runs>/_data/<preset>, or the user's SEGTHOR (gpu)"
    runs = Path(a.runs_dir).resolve(); p = PRESETS[a.preset]
    storage = getattr(a, 'storage', None) or f"sqlite:///{runs/'optuna.db'}"
    sets = dict(parse_set(s) for s in getattr(a, 'set', None) or [])
    seeds, folds = getattr(a, 'seeds', None), sorted(getattr(a, 'folds', None) or [0])
    tag = (f"-s{'_'.join(map(str, seeds))}" if seeds else '') + (f"-f{'_'.join(map(str, folds))}" if folds != [0] else '')
    if p['phantom'] is not None:
        d = runs/'_data'/a.preset
        return Setup(a.preset, runs, storage, fold_roots(str(d/'PHANTOM'), folds, False), str(d/'source'), p['gt_name'],
                     str(d/'sam_tiny.safetensors'), str(d/'hiera_tiny.safetensors'), sets, seeds, tag)
    ab = lambda k: str(Path(getattr(a, k)).resolve()) if getattr(a, k, None) else None   # `aggregate` has none of these flags
    return Setup(a.preset, runs, storage, fold_roots(ab('data_root') or '<--data_root>', folds, True), ab('source_dir'),
                 getattr(a, 'gt_name', None) or p['gt_name'], ab('sam_checkpoint'), ab('sam2_checkpoint'), sets, seeds, tag)

def parse_set(s:str)->tuple:
    "'key=value' -> (key, value parsed as JSON, else the string)"
    if '=' not in s: raise SystemExit(f"grid.py: --set {s!r}: expected KEY=VALUE (a TrainConfig field)")
    key, raw = s.split('=', 1)
    try: return key, json.loads(raw)
    except json.JSONDecodeError: return key, raw

def fixed_fields(s:Setup)->dict:
    "The TrainConfig fields every trial shares: the preset's training, the data (fold 0), --set"
    p = dict(PRESETS[s.preset]['train']); extra = p.pop('extra', {})
    return {k: v for k, v in {**p, **extra, 'data_root': s.data_root, **s.sets}.items() if v is not None}

def replicate_space(s:Setup)->dict:
    "The grid parameters that repeat each configuration: seed (--seeds), the split's validation block (--folds)"
    return ({'seed': list(s.seeds)} if s.seeds else {}) | ({'data_root': [s.data_roots[f] for f in sorted(s.data_roots)]} if len(s.data_roots) > 1 or 0 not in s.data_roots else {})

def model_cfg(s:Setup, model:str)->dict:
    "A SAM model's builder options: its base checkpoint (tiny and random on a phantom)"
    tiny = {'size': 'tiny'} if PRESETS[s.preset]['phantom'] else {}
    return tiny | {'checkpoint': getattr(s, SAM_BASE[model]) or f'<--{SAM_BASE[model]}_checkpoint>'}

def model_settings(s:Setup)->dict:
    "tune's `when`: each SAM model's base checkpoint, and the preset's per-model training"
    per = PRESETS[s.preset]['model_train']
    return {'model': {m: ({'model_cfg': model_cfg(s, m)} if m in SAM_BASE else {}) | per.get(m, {}) for m in STUDY_GRID['model'] if m in SAM_BASE or m in per}}

def part_space(s:Setup, part:str)->dict:
    "A part's search space file: {sampler, space, when, fixed} (crf: built from the grid's trials)"
    if part == 'grid': return dict(sampler='grid', space=STUDY_GRID | replicate_space(s), when=model_settings(s), fixed={})
    per = PRESETS[s.preset]['model_train'].get('samed', {})
    return dict(sampler='grid', space=SAMED_R4['space'] | replicate_space(s), when=SAMED_R4['when'],
                fixed=SAMED_R4['fixed'] | {'model_cfg': model_cfg(s, 'samed')} | per)

def tune_settings(s:Setup, part:str, a)->dict:
    "tune's settings for a part: its folder and study, the storage, the test split's evaluation, the runner"
    return dict(dest=str(s.runs/f'{part}-{s.preset}{s.tag}'), storage=s.storage, source_dir=s.source_dir, gt_name=s.gt_name,
                eval_splits=('test',), runner=a.runner, nbs=a.nbs, prune=False)   # every experiment of the table runs to its end

# ------------------------------------------------------------------------------------------------------------ trials
def load_part(s:Setup, part:str):
    "A part's Optuna study, or None"
    import optuna
    from segthor_nb.tune import storage_url
    if s.storage.startswith('sqlite:///') and not Path(s.storage[len('sqlite:///'):]).is_file(): return None   # nothing run yet
    try: return optuna.load_study(study_name=f'{part}-{s.preset}{s.tag}', storage=storage_url(s.storage, s.runs))
    except KeyError: return None

def trial_runs(s:Setup, part:str)->dict:
    "{(experiment, seed, fold): run folder} of a part's complete trials"
    study, out = load_part(s, part), {}
    for t in study.get_trials(deepcopy=False) if study else []:
        run = Path(t.user_attrs.get('run_dir', '-'))
        if t.state.name == 'COMPLETE' and (run/'config.json').is_file():
            cfg = json.loads((run/'config.json').read_text())
            out[(experiment_name(cfg), cfg.get('seed'), s.fold_of(cfg.get('data_root')))] = run
    return out

def replicates(s:Setup)->list:
    "The (seed, fold) pairs every configuration runs with (seed None: TrainConfig's)"
    seeds = s.seeds or [2024 if PRESETS[s.preset]['train'].get('deterministic') else None]
    return list(product(seeds, sorted(s.data_roots)))

# ----------------------------------------------------------------------------------------------------------- nnU-Net
NNUNET_ID = 55

def nnunet_plan(s:Setup, work:Path)->dict:
    "nnU-Net's steps for a preset: its command lines (tiny trainer, CPU, no TTA on a phantom; nnU-Net's own on a GPU)"
    from segthor_nb.nnunet import nnunet_commands, TINY_TRAINER
    cpu = PRESETS[s.preset]['phantom'] is not None
    raw = work/'nnunet'/'nnUNet_raw'/f'Dataset{NNUNET_ID:03d}_SEGTHOR'
    return nnunet_commands(NNUNET_ID, NNUNET_CONFIGS, images=str(raw/'imagesTs'), pred_root=str(work/'predictions'),
                           trainer=TINY_TRAINER if cpu else 'nnUNetTrainer', device='cpu' if cpu else 'cuda',
                           processes=1 if cpu else None, tta=not cpu)

def nnunet_prepare(s:Setup, work:Path, log)->tuple:
    "Export the source tree with our split (fold 0) and plan every configuration, once: (dataset folder, env, steps)"
    from segthor_nb.nnunet import export_nnunet, nnunet_env, run_nnunet
    from segthor_nb.core import patient_dirs
    from segthor_nb.slicing import split_patients
    if not s.source_dir: raise RuntimeError("nnunet needs --source_dir (the SEGTHOR tree with the fixed labels)")
    env, steps = nnunet_env(work/'nnunet', processes=1 if PRESETS[s.preset]['phantom'] else 8), nnunet_plan(s, work)
    ds = work/'nnunet'/'nnUNet_raw'/f'Dataset{NNUNET_ID:03d}_SEGTHOR'
    if not (work/'planned').exists():
        split = split_patients([d.name for d in patient_dirs(s.source_dir)], seed=0, create_test=True, **PRESETS[s.preset]['split'])
        ds = export_nnunet(s.source_dir, env['nnUNet_raw'], NNUNET_ID, gt_name=s.gt_name, split=split,
                           preprocessed_root=env['nnUNet_preprocessed'], overwrite=True)
        log(f"plan: {' '.join(steps['plan'])}"); run_nnunet(steps['plan'], env, work/'logs'/'plan.log')
        (work/'planned').write_text(json.dumps(split))
    return ds, env, steps

def planned(env:dict)->set:
    "The configurations nnU-Net planned (it plans 3d_lowres only for volumes much larger than its patch)"
    plans = Path(env['nnUNet_preprocessed'])/f'Dataset{NNUNET_ID:03d}_SEGTHOR'/'nnUNetPlans.json'
    return set(json.loads(plans.read_text())['configurations']) if plans.is_file() else set()

def run_nnunet_config(s:Setup, conf:str, work:Path, out:Path, log)->None:
    "Train and predict one nnU-Net configuration, score it into out/eval like a 05b evaluation"
    from segthor_nb.nnunet import run_nnunet, score_nnunet
    from segthor_nb.evaluate import write_results
    ds, env, steps = nnunet_prepare(s, work, log)
    for step in (f'train_{conf}', f'predict_{conf}'):
        log(f"{step}: {' '.join(steps[step])}"); run_nnunet(steps[step], env, work/'logs'/f'{step}.log')
    write_results(score_nnunet(work/'predictions'/conf, ds), out/'eval', '3d')
    argv = steps[f'train_{conf}']; trainer = argv[argv.index('-tr') + 1] if '-tr' in argv else 'nnUNetTrainer'
    cfg = dict(model=f'nnU-Net {conf}', configuration=conf, trainer=trainer, nnunet_dataset=Path(ds).name,
               split=json.loads((work/'planned').read_text()), source_dir=s.source_dir, gt_name=s.gt_name, augment=False, normalize=False, crf=False)
    (out/'config.json').write_text(json.dumps(cfg, indent=2))

# ---------------------------------------------------------------------------------------------------------------- data
def prepare_data(s:Setup)->None:
    "Generate, once, the preset's phantom (SEGTHOR tree + one sliced copy per fold) and tiny SAM base checkpoints"
    p = PRESETS[s.preset]
    if p['phantom'] is None: return
    import torch
    from segthor_nb.data_fix import write_phantom
    from segthor_nb.slicing import slice_tree
    from segthor_nb.models import save_weights
    from segthor_nb.sam import build_sam, Hiera, HIERA_CONFIGS
    src, ph = Path(s.source_dir), p['phantom']
    if not (src/'phantom.json').exists(): write_phantom(src, ph['n_patients'], ph['shape'], ph['n_slices'], seed=0)
    for fold, root in s.data_roots.items():
        if not (Path(root)/'test'/'geometry.json').exists():
            slice_tree(src, root, ph['shape'], create_test=True, seed=0, fold=fold, progress=False, **p['split'])
    # tiny SAM / Hiera bases: random, but a file, so the frozen weights a LoRA/adapter checkpoint builds on are the
    # same at evaluation as in training (as the real SAM checkpoints are on a GPU box)
    for path, build in ((s.sam, lambda: build_sam('tiny', 3)), (s.sam2, lambda: Hiera(**HIERA_CONFIGS['tiny']))):
        if not Path(path).exists():
            torch.manual_seed(0); save_weights(build(), path)

# ----------------------------------------------------------------------------------------------------------------- run
def check_setup(s:Setup, parts:list)->None:
    "The paths a preset needs for these parts given (gpu: the user's data and base checkpoints)"
    models = {'grid', 'samed_r4'} & set(parts)
    needed = [s.data_root, s.source_dir or '<--source_dir>'] + ([s.sam or '<--sam_checkpoint>', s.sam2 or '<--sam2_checkpoint>'] if models else [])
    if missing := [v for v in needed if str(v).startswith('<--')]: raise SystemExit(f"grid.py run --preset {s.preset}: {missing[0][1:-1]} is required")

def run_tuned(s:Setup, part:str, a)->int:
    "The grid or samed_r4: one Optuna study over its space; 1 if a trial did not complete"
    from segthor_nb.tune import tune
    sp = part_space(s, part); s.runs.mkdir(parents=True, exist_ok=True)
    (s.runs/f'{part}-{s.preset}{s.tag}.json').write_text(json.dumps({k: sp[k] for k in ('sampler', 'space', 'when')}, indent=1))
    study = tune(sp['space'], fixed_fields(s) | sp['fixed'], 'grid', sp['when'], **tune_settings(s, part, a))
    return report_trials(s, part, study)

def crf_points(s:Setup)->tuple:
    "The CRF study's space and `when`: one point per grid run of CRF_OF and replicate, from its best checkpoint"
    runs = trial_runs(s, 'grid'); need = [(n, *r) for n in CRF_OF for r in replicates(s)]
    if missing := [k for k in need if k not in runs]: return None, missing
    when = {}
    for k in need:
        cfg = json.loads((runs[k]/'config.json').read_text())
        when[str(runs[k]/'best.safetensors')] = {f: cfg[f] for f in SOURCE_FIELDS if cfg.get(f) is not None}
    return {'from_checkpoint': list(when)}, {'from_checkpoint': when}

def run_crf(s:Setup, a)->int:
    "The CRF runs: a study whose points are the grid's enet_aug and samed_fast_aug checkpoints, each with a CRF"
    from segthor_nb.tune import tune
    space, when = crf_points(s)
    if space is None: print(f"crf: needs the grid's {', '.join(CRF_OF)} complete in study grid-{s.preset}{s.tag} (missing {when}): run the grid first"); return 1
    return report_trials(s, 'crf', tune(space, fixed_fields(s) | {'crf': True}, 'grid', when, **tune_settings(s, 'crf', a)))

def report_trials(s:Setup, part:str, study)->int:
    "One line per experiment and replicate of a finished part; 1 if one has no complete trial"
    done = trial_runs(s, part)
    names = {'grid': [experiment_name(dict(zip(STUDY_GRID, v))) for v in product(*STUDY_GRID.values())], 'crf': [f'{n}_crf' for n in CRF_OF],
             'samed_r4': [n for n in experiment_names() if n.startswith('samed_r4')]}[part]
    keys = [(n, *r) for n in names for r in replicates(s)]
    for k in keys: print(f"{replicate_label(*k):<32} {'done' if k in done else 'FAILED':<9} {done.get(k, '(see the trials in ' + study.study_name + ')')}", flush=True)
    return int(any(k not in done for k in keys))

def replicate_label(name:str, seed, fold)->str:
    "One replicate's run name: enet_aug_s1_f0 (the seed and fold suffixes a configuration is grouped by)"
    return f"{name}_s{seed}_f{fold}"

def run_ensemble(s:Setup, a)->int:
    "ENSEMBLE_OF's trials of each replicate as one model, scored on the test split: <runs>/ensemble-<preset>/<replicate>/"
    from segthor_nb.evaluate import test3d
    runs, failed = trial_runs(s, 'grid'), 0
    for seed, fold in replicates(s):
        out = s.runs/f'ensemble-{s.preset}{s.tag}'/f's{seed}_f{fold}'
        members = [runs.get((n, seed, fold)) for n in ENSEMBLE_OF]
        if None in members: print(f"{replicate_label('ensemble', seed, fold):<32} FAILED    needs the grid's {', '.join(ENSEMBLE_OF)}"); failed = 1; continue
        if (out/'eval'/'results3d.csv').is_file() and not a.overwrite: print(f"{replicate_label('ensemble', seed, fold):<32} skipped   {out}"); continue
        test3d(cfg=None, ensemble=[str(m) for m in members], dest=str(out/'eval'), split='test', source_dir=s.source_dir, gt_name=s.gt_name,
               num_workers=0, progress=False, overwrite=True)
        cfg = dict(model='ensemble', members=[str(m) for m in members], seed=seed, fold=fold, augment=False, normalize=False, crf=False)
        (out/'config.json').write_text(json.dumps(cfg, indent=2)); print(f"{replicate_label('ensemble', seed, fold):<32} done      {out}")
    return failed

def run_nnunet(s:Setup, a)->int:
    "Each nnU-Net configuration in <runs>/_work/nnunet_<c>-<preset>, moved to <runs>/nnunet_<c>-<preset> when it succeeded"
    work, failed = s.runs/'_work'/f'nnunet-{s.preset}', 0
    for conf in NNUNET_CONFIGS:
        name, final, tmp = f'nnunet_{conf}', s.runs/f'nnunet_{conf}-{s.preset}', s.runs/'_work'/f'nnunet_{conf}-{s.preset}'
        if (final/'eval'/'results3d.csv').exists() and not a.overwrite: print(f"{name:<32} skipped   (has {final/'eval'/'results3d.csv'}; --overwrite to redo)"); continue
        shutil.rmtree(tmp, ignore_errors=True); (tmp/'eval').mkdir(parents=True); t0 = time.time()
        try:
            with open(tmp/'grid.log', 'a') as logf:
                log = lambda msg: (logf.write(msg + '\n'), logf.flush())
                _, env, _ = nnunet_prepare(s, work, log)
                if conf not in planned(env): print(f"{name:<32} not planned: nnU-Net makes {conf} only for volumes much larger than its patch"); continue
                run_nnunet_config(s, conf, work, tmp, log)
        except Exception as e:
            print(f"{name:<32} FAILED    {time.time() - t0:7.1f} s  {str(e).splitlines()[0] if str(e) else type(e).__name__} (see {tmp})"); failed = 1; continue
        shutil.rmtree(final, ignore_errors=True); os.rename(tmp, final)
        print(f"{name:<32} done      {time.time() - t0:7.1f} s  {final}")
    return failed

def cmd_run(a)->int:
    s = make_setup(a)
    parts = list(PARTS) if a.all else a.parts
    if not parts: raise SystemExit(f"grid.py run: name the parts ({', '.join(PARTS)}) or pass --all")
    if bad := [p for p in parts if p not in PARTS]: raise SystemExit(f"grid.py run: unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    check_setup(s, parts)
    try: prepare_data(s)
    except Exception as e: raise SystemExit(f"grid.py: preparing the {s.preset} data in {s.runs/'_data'} failed: {type(e).__name__}: {e}")
    from segthor_nb.core import SegthorError
    steps = dict(grid=lambda: run_tuned(s, 'grid', a), samed_r4=lambda: run_tuned(s, 'samed_r4', a), crf=lambda: run_crf(s, a),
                 ensemble=lambda: run_ensemble(s, a), nnunet=lambda: run_nnunet(s, a))
    failed = 0
    for part in [p for p in PARTS if p in parts]:
        try: failed += steps[part]()
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
    s = make_setup(a); tag = f'{s.preset}{s.tag}'
    common = lambda part: ['--storage', s.storage, '--dest', str(s.runs/f'{part}-{tag}'), '--source_dir', str(s.source_dir or '<--source_dir>'),
                           '--gt_name', s.gt_name, '--eval_splits', 'test', '--no_prune']
    print(f"# preset {s.preset}: Optuna studies <part>-{tag} in {s.storage}; data {', '.join(map(str, s.data_roots.values()))}")
    if PRESETS[s.preset]['phantom']: print(f"# (`grid.py run` first generates the phantom and the tiny SAM/SAM 2 base checkpoints under {s.runs/'_data'/s.preset})")
    print("# the same command on several machines with one --storage URL (postgresql://...) shares a study\n")
    for part in ('grid', 'samed_r4'):
        sp = part_space(s, part); n = len(list(product(*sp['space'].values())))
        print(f"## {part}: {n} trials; {s.runs/f'{part}-{tag}.json'} (`grid.py run` writes it):")
        print(f"# {json.dumps({k: sp[k] for k in ('sampler', 'space', 'when')})}")
        print(shlex.join(['segthor-tune', '--space', str(s.runs/f'{part}-{tag}.json'), *common(part), *tune_flags(fixed_fields(s) | sp['fixed'])]) + '\n')
    print(f"## crf: {', '.join(CRF_OF)} with a CRF, each from its grid trial's best.safetensors (one point per replicate)")
    print(shlex.join(['segthor-tune', '--grid', 'from_checkpoint=<grid trial>/best.safetensors,...', *common('crf'), *tune_flags(fixed_fields(s) | {'crf': True})]) + '\n')
    print(f"## ensemble: {' + '.join(ENSEMBLE_OF)} of each replicate, weighted per class by their validation 3D Dice")
    print(shlex.join(['segthor-test3d', '--model', 'ensemble', '--ensemble', *[f'<grid trial of {n}>' for n in ENSEMBLE_OF], '--split', 'test',
                      '--source_dir', str(s.source_dir or '<--source_dir>'), '--dest', str(s.runs/f'ensemble-{tag}'/'<replicate>'/'eval')]) + '\n')
    work = s.runs/'_work'/f'nnunet-{s.preset}'; nn = work/'nnunet'; procs = 1 if PRESETS[s.preset]['phantom'] else 8
    print(f"## nnunet: {', '.join(NNUNET_CONFIGS)} (its own pipeline; fold 0 of our split; the slowest entries)")
    print(f"export nnUNet_raw={nn}/nnUNet_raw nnUNet_preprocessed={nn}/nnUNet_preprocessed nnUNet_results={nn}/nnUNet_results "
          f"nnUNet_extTrainer={nn}/trainers nnUNet_n_proc_DA={procs} nnUNet_def_n_proc={procs}  # trainers/: segthor_nb.nnunet.write_trainer_dir")
    print(f"segthor-nnunet-export {shlex.quote(str(s.source_dir))} --raw_root {nn}/nnUNet_raw --preprocessed_root {nn}/nnUNet_preprocessed "
          f"--dataset_id {NNUNET_ID} --gt_name {s.gt_name} " + ' '.join(f'--{k} {v}' for k, v in PRESETS[s.preset]['split'].items()))
    steps = nnunet_plan(s, work)
    for step in ['plan'] + [f'{x}_{c}' for c in NNUNET_CONFIGS for x in ('train', 'predict')]: print(shlex.join(steps[step]))
    for c in NNUNET_CONFIGS: print(f"segthor-test3dnnunet --pred_dir {work}/predictions/{c} --gt_dir {nn}/nnUNet_raw/Dataset{NNUNET_ID:03d}_SEGTHOR --out {s.runs}/nnunet_{c}-{s.preset}/eval/results3d.csv")
    return 0

# ----------------------------------------------------------------------------------------------------------- aggregate
def collect(s:Setup)->tuple:
    "The evaluated runs of a preset as one long table (run = experiment name; seed, fold, replicate), and the studies"
    import pandas as pd
    from segthor_nb.interpret import read_run
    frames, studies = [], {p: st for p in ('grid', 'samed_r4', 'crf') if (st := load_part(s, p)) is not None}
    label = lambda df, name, seed, fold: df.assign(run=name, seed=seed, fold=fold, replicate=f's{seed}_f{fold}', replicate_run=replicate_label(name, seed, fold))
    for part in studies:
        for (name, seed, fold), run in trial_runs(s, part).items():
            if (run/'eval'/'results3d.csv').is_file():
                df = label(read_run(run), name, seed, fold)
                frames.append(df.assign(model='samed r4') if name.startswith('samed_r4') else df)
    for run in sorted((s.runs/f'ensemble-{s.preset}{s.tag}').glob('*/eval/results3d.csv')):
        cfg = json.loads((run.parents[1]/'config.json').read_text()); frames.append(label(read_run(run.parents[1]), 'ensemble', cfg['seed'], cfg['fold']))
    for c in NNUNET_CONFIGS:
        if ((run := s.runs/f'nnunet_{c}-{s.preset}')/'eval'/'results3d.csv').is_file():
            frames.append(label(read_run(run), f'nnunet_{c}', None, 0))
    if not frames: raise SystemExit(f"grid.py aggregate: no evaluated run for preset {s.preset}{s.tag} in {s.storage} or {s.runs} (run the grid first)")
    return pd.concat(frames, ignore_index=True), studies

def replicate_table(df):
    "Per experiment: replicates, and mean ± sd over them of the mean foreground 3D Dice on the test patients"
    d = df[df['slice'].isna() & (df['metric'] == 'dice')]
    per = d.groupby(['run', 'replicate'])['value'].mean()
    return per.groupby('run').agg(replicates='count', dice_mean='mean', dice_sd='std')

def learning_note(s:Setup, model:str)->str|None:
    "Why a model's numbers mean nothing on this preset, or None"
    if PRESETS[s.preset]['phantom'] is not None and model in CANNOT_LEARN + ('samed r4', 'ensemble'):
        return 'cannot learn here: its frozen image encoder is a random tiny SAM (no pretrained SAM on a phantom preset; use --preset gpu)'
    return None

def report_table(s:Setup, table):
    "The table as printed: Dice columns blanked, with the reason, for models that cannot learn on this preset"
    out = table.copy().astype(object); out['note'] = ''
    for run, row in table.iterrows():
        if note := learning_note(s, row['model']): out.loc[run, [c for c in table.columns if c not in ('model', 'augment', 'normalize', 'crf', 'replicates')]] = '—'; out.loc[run, 'note'] = note
    return out

def replicate_runs(df):
    "The long table with run = one replicate's name (enet_aug_s1_f0; nnU-Net: nnunet_2d_f0), as segthor_nb.compare groups them"
    import pandas as pd
    return df.assign(run=[f"{r}_f{f}" if pd.isna(sd) else f"{r}_s{int(sd)}_f{f}" for r, sd, f in zip(df['run'], df['seed'], df['fold'])])

def statistics(s:Setup, df)->tuple:
    "The study beside ours, bootstrap intervals per replicate, and paired tests of the best run against the others"
    import pandas as pd
    from segthor_nb.compare import side_by_side, side_by_side_table, summarize, paired_test
    reps = replicate_runs(df)
    sbs, stats = side_by_side(reps), summarize(reps).xs('dice', level='metric')
    seed0, fold0 = df['seed'].min(), df['fold'].min()       # one replicate: its runs share their test patients
    first = reps[(df['seed'].isna() | (df['seed'] == seed0)) & (df['fold'] == fold0)]
    model = first.groupby('run')['model'].first()
    means = stats.xs('mean', level='organ')['mean'].reindex(model.index)
    ok = [r for r in model.index if not learning_note(s, model[r]) and pd.notna(means[r])]
    if len(ok) < 2: return sbs, side_by_side_table(sbs), stats, None
    best = means[ok].idxmax()
    tests = pd.DataFrame({r: paired_test(first, best, r).loc['mean'] for r in ok if r != best}).T.astype({'n': int}).rename_axis(f'{best} vs')
    return sbs, side_by_side_table(sbs), stats, tests

def cmd_aggregate(a)->int:
    from segthor_nb.core import SegthorError, atomic_path, md_table
    from segthor_nb.interpret import runs_table, ablation_grid, write_runs_figures
    from segthor_nb.tune import trials_table, tune_figures
    s = make_setup(a); dest = Path(a.dest or s.runs/'report').resolve(); report = dest/'report.md'
    if report.exists() and not a.overwrite: raise SystemExit(f"grid.py aggregate: {report} exists; pass --overwrite to rebuild the report")
    df, studies = collect(s)
    per_replicate = df.assign(patient=df['patient'] + '@' + df['replicate']) if df['replicate'].nunique() > 1 else df   # a patient per replicate
    try: table, grid, figures = runs_table(df), ablation_grid(df), write_runs_figures(per_replicate, dest, overwrite=a.overwrite)
    except (SegthorError, FileExistsError) as e: raise SystemExit(f"grid.py aggregate: {e}")
    table = table.join(replicate_table(df))
    optuna_figs = tune_figures(studies['grid'], dest) if 'grid' in studies else {}
    sbs, sbs_table, stats, tests = statistics(s, df)
    d3 = df[df['slice'].isna()]; missing = [n for n in experiment_names() if n not in set(df['run'])]
    trials = {p: trials_table(st).drop(columns=['worker', 'run_dir'], errors='ignore') for p, st in studies.items()}
    notes = sorted({n for m in table['model'] if (n := learning_note(s, m))})
    lines = [f"# The study's table, from {len(table)} evaluated experiment(s) of preset {s.preset}{s.tag}", '',
             f"Mean 3D Dice per organ on the held-out test patients ({', '.join(sorted(d3['patient'].unique()))}), native grid, "
             f"mean over the organs, pooled over each experiment's replicates (seed × fold; `replicates`, and the mean ± sd "
             f"of their mean foreground Dice in `dice_mean`, `dice_sd`); best first.", '',
             md_table(report_table(s, table)), *[f"Runs marked — {n}." for n in notes], '',
             '## Ablation: mean foreground Dice, model × normalize × augment (runs without CRF)', '',
             md_table(grid.rename(columns={False: 'no augment', True: 'augment'})),
             "## The study beside ours", '', "Mean 3D test Dice per organ: the study's published per-patient results "
             "(WouterBant/AI4MI, results_metrics/; 4 test patients) | ours, pooled over replicates (difference ours − study; "
             "– where the study has no such run). The study scored SEGTHOR, a phantom preset scores the phantom: compare "
             "rankings there, not values.", '', md_table(sbs_table), '',
             "## Statistics", '', "Per replicate and organ: patients, mean ± sd and a 95% percentile bootstrap interval of the "
             "mean 3D Dice (2000 resamples of the test patients).", '', md_table(stats.reset_index().set_index('run'), 3), '',
             *(["Paired over the same test patients (first replicate), mean over the organs: the best run against each other run, "
                "the mean difference with its paired-bootstrap 95% interval, and the Wilcoxon signed-rank p (with n patients "
                "the smallest two-sided p is 2/2^n).", '', md_table(tests, 3), ''] if tests is not None else []),
             '## Figures', '', *[f"![{n}]({p.name})" for n, p in figures.items()], '',
             f"## The Optuna studies ({s.storage}): validation 3D Dice of each trial (the objective; the table above is the test split)", '',
             *[f"### {studies[p].study_name}\n\n{md_table(t, 4)}" for p, t in trials.items()], *[f"![{n}]({p.name})" for n, p in optuna_figs.items()], '',
             f"Grid entries without results: {', '.join(missing) if missing else 'none'}.", '']
    dest.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest/'table.csv'); grid.to_csv(dest/'ablation.csv')
    sbs.to_csv(dest/'study_vs_ours.csv'); stats.to_csv(dest/'statistics.csv')
    if tests is not None: tests.to_csv(dest/'paired_tests.csv')
    df.to_csv(dest/'results_long.csv', index=False)
    with atomic_path(report) as tmp: tmp.write_text('\n'.join(lines))
    print(report_table(s, table).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} experiments; report {report}; figures {', '.join(p.name for p in [*figures.values(), *optuna_figs.values()])}")
    return 0

# ----------------------------------------------------------------------------------------------------------------- CLI
def parser()->argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog='runs/grid.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest='cmd', required=True)
    def common(p):
        p.add_argument('--runs_dir', '--runs-dir', default=str(ROOT/'runs'), help='folder of the studies, their trial folders and the data (default: runs/ of the repo)')
        p.add_argument('--preset', choices=list(PRESETS), default='cpu',
                       help='cpu: a phantom generated once into <runs_dir>/_data, ≤ 60 min on 2 cores, ENet and SAM2UNet learn; '
                            'smoke: 4 epochs, plumbing only; ci: smaller still; '
                            "gpu: real SEGTHOR, the study's 200 epochs and batch 8, --data_root and --source_dir required (default: cpu)")
        p.add_argument('--storage', help='Optuna storage URL shared by every machine running the grid (default: sqlite:///<runs_dir>/optuna.db)')
        p.add_argument('--seeds', type=int, nargs='+', help="training seeds: every configuration runs once per seed (default: one run, TrainConfig's seed)")
        p.add_argument('--folds', type=int, nargs='+', help="validation blocks of the split (split_patients' fold): every configuration runs once per fold "
                                                            "(default: 0; gpu: --data_root with {fold} in it)")
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
    p = sub.add_parser('list', help='print the segthor-tune commands of the grid and the other steps'); common(p); preset(p)
    p = sub.add_parser('run', help='run parts of the study (a study resumes; finished trials are not run again)'); common(p); preset(p)
    p.add_argument('parts', nargs='*', help=f"any of {', '.join(PARTS)} (crf and ensemble need the grid's trials)")
    p.add_argument('--all', action='store_true', help='every part')
    p.add_argument('--overwrite', action='store_true', help='ensemble, nnunet: redo a run that has results (nnunet: replaced only when the new run succeeds)')
    p = sub.add_parser('aggregate', help="the paper's table and figures from the studies' evaluated trials, the ensemble and nnU-Net"); common(p)
    p.add_argument('--dest', help='report folder (default: <runs_dir>/report)')
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing report')
    return top

def main(argv=None)->int:
    a = parser().parse_args(argv)
    return dict(list=cmd_list, run=cmd_run, aggregate=cmd_aggregate)[a.cmd](a)

if __name__ == '__main__': sys.exit(main())
