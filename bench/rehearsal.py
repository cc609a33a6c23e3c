#!/usr/bin/env python
"""Full-size rehearsal: the README's "Using real SEGTHOR data" commands, end to end, on a phantom of SEGTHOR's size.

The phantom: 40 training patients of 512 × 512 × 135–284 slices (spread evenly over that range), in-plane spacing
0.9–1.37 mm (the phantom's own field of view), slice spacing 2–3.7 mm in the header, every heart displaced by the
course's matrix (Patient_27 keeps the clean labels as GT2.nii.gz). The phantom paints its thorax over a length of its
own choosing, so the header's slice spacing stretches the anatomy in z; sizes, spacings and file formats are SEGTHOR's,
which is what time and memory depend on. At full size no `phantom.json` is written: `segthor-fix` then takes the path of
real data (the course's matrix). A reduced run (`--shape`, `--slices`) scales the matrix to the grid and records it in
`phantom.json`, as `segthor-phantom` does.

Stages, each a fresh process (the console scripts of this environment): phantom (not a README command), validate, fix,
slice, train (CPU, one epoch on random patches of every training slice: the whole split is loaded, the compute is
bounded), test3d on the validation split, metrics3d on its stitched predictions, nnU-Net export. The study's own slicing
script (from its repository, with its approximate heart patch) and its nnU-Net formatting script run on the same tree in
the same run; its other stages have no runnable counterpart here (the table says why).

Per stage: wall time, and the peak memory of the process tree: the sum of the PSS (resident memory, pages shared by
forked workers counted once) of the process and its descendants, polled every 0.1 s, or the kernel's peak RSS of its
largest process if that is higher (a spike between two polls). The largest process's peak RSS is listed too. Writes rehearsal.md and rehearsal.csv under
--dest, after every stage. Exits 1 naming the stage if one fails or goes above --ceiling_gb.

Usage: python bench/rehearsal.py --dest /work/build/rehearsal_full [--n_patients 40] [--shape 512] [--slices 135 284]
       [--workers 2] [--study_repo PATH (or $SEGTHOR_STUDY_REPO)] [--keep]
"""
import argparse, csv, io, json, os, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np, psutil

GB = 1e9
CEILING_GB = 8.
BIN = Path(sys.executable).parent


def tree_memory(proc:psutil.Process)->tuple:
    "(summed PSS of `proc` and its descendants, largest single RSS), in bytes"
    pss, rss = [], []
    for p in [proc, *proc.children(recursive=True)]:
        try: m = p.memory_full_info(); pss.append(m.pss); rss.append(m.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess): pass
    return sum(pss), max(rss, default=0)


def own_peak(pid:int)->int:
    "The process's own peak RSS since its exec (VmHWM of /proc/PID/status), bytes"
    for l in Path(f'/proc/{pid}/status').read_text().splitlines():
        if l.startswith('VmHWM:'): return int(l.split()[1])*1024
    return 0

def measure(cmd:list, log:Path=None, env:dict=None, cwd=None, interval:float=.1)->dict:
    "Run `cmd`: wall time, peak memory of its process tree (polled PSS, at least the kernel's largest RSS peak)"
    out = open(log, 'wb') if log else subprocess.DEVNULL
    t0, peak, single = time.perf_counter(), 0, 0
    try:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        proc = psutil.Process(p.pid)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid: break
            try: s, m = tree_memory(proc); peak, single = max(peak, s), max(single, m, own_peak(p.pid))
            except (psutil.NoSuchProcess, OSError): pass
            time.sleep(interval)
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log: out.close()
    seconds = time.perf_counter() - t0
    # not getrusage's ru_maxrss: a forked child keeps its parent's peak (a pytest worker's 1.7 GB) across exec
    return dict(rc=p.returncode, seconds=seconds, peak=max(peak, single), tree_pss=peak, max_process_rss=single)


# ---- the phantom
def slice_counts(n:int, lo:int, hi:int, seed:int=0)->list:
    "`n` slice counts spread evenly over lo..hi, in a seeded random patient order"
    return [int(v) for v in np.random.default_rng(seed).permutation(np.rint(np.linspace(lo, hi, n)))]


def course_matrix(shape:tuple, slices:tuple)->tuple:
    "(tampering matrix, phantom.json extras): the course's own at SEGTHOR size, else scaled like segthor-phantom"
    from segthor_nb.data_fix import course_affine
    if tuple(shape) == (512, 512) and slices[0] >= 135: return course_affine(), None
    scale = (shape[0]/512, shape[1]/512, slices[0]/160)
    shift = np.multiply((50., 40., 15.), scale); shift[2] = round(shift[2])
    M = course_affine(scale, shift=shift/np.array(scale))
    return M, dict(tampered=True, scale=list(scale), matrix=M.tolist())


def write_patient(args):
    "Generate one patient (header slice spacing drawn in SEGTHOR's 2–3.7 mm) and write CT, tampered GT, maybe GT2"
    from segthor_nb.data_fix import Geometry, make_phantom, move_heart, save_volume
    pid, root, shape, n_slices, seed, matrix, clean = args
    ct, gt, geom = make_phantom(tuple(shape), n_slices, seed)
    affine = geom.affine.copy()
    affine[:3, 2] *= np.random.default_rng(seed).uniform(2., 3.7)/geom.spacing[2]
    geom, d = Geometry.from_affine(affine, geom.shape), Path(root)/'train'/pid
    save_volume(ct, geom, d/f'{pid}.nii.gz')
    save_volume(move_heart(gt, np.array(matrix)), geom, d/'GT.nii.gz')
    if clean: save_volume(gt, geom, d/'GT2.nii.gz')
    return pid, list(geom.spacing)


def write_tree(root:Path, n_patients:int, shape:tuple, slices:tuple, seed:int=0, workers:int=2):
    "A tampered SEGTHOR-layout tree of `n_patients` phantom patients (Patient_27, or the last, with GT2)"
    M, extra = course_matrix(shape, slices)
    counts, clean = slice_counts(n_patients, *slices, seed), min(27, n_patients)
    jobs = [(f'Patient_{i:02d}', str(root), shape, counts[i-1], seed*1000 + i, M.tolist(), i == clean) for i in range(1, n_patients + 1)]
    with ProcessPoolExecutor(workers) as ex: spacing = dict(ex.map(write_patient, jobs))
    if extra: (root/'phantom.json').write_text(json.dumps(dict(seed=seed, shape=list(shape), n_slices=counts,
                                                                 clean_pair=f'Patient_{clean:02d}', spacing_mm=spacing, **extra)))


# ---- the stages
def study_script(repo:Path, files:list, into:Path)->Path|None:
    "The study's `files` (paths under its repository) copied out into `into`; the first, or None if unreadable"
    into.mkdir(parents=True, exist_ok=True)
    for f in files:
        r = subprocess.run(['git', '-C', str(repo), 'show', f'HEAD:{f}'], capture_output=True)
        if r.returncode: return None
        (into/Path(f).name).write_bytes(r.stdout)
    return into/Path(files[0]).name


def stages(a, d:Path)->list:
    "(name, command, note) of every stage, in order"
    src, sliced, run = d/'segthor_train', d/'SEGTHOR', d/'results'/'enet'
    n, retains = a.n_patients, max(1, min(10, a.n_patients//4))
    sc = lambda name, *args: [str(BIN/f'segthor-{name}'), *map(str, args)]
    return [
        ('phantom', [sys.executable, __file__, 'phantom', src, a.n_patients, *a.shape, *a.slices, a.workers],
         'not a README command: writes the tree'),
        ('validate', sc('validate', src), ''),
        ('fix', sc('fix', src, '--method', 'known'), ''),
        ('slice', sc('slice', '--source_dir', src, '--dest_dir', sliced, '--shape', 256, 256, '--retains', retains), ''),
        ('train', sc('train', '--dataset', 'SEGTHOR', '--data_root', sliced, '--model', 'ENet', '--epochs', 1, '--augment',
                     '--normalize', '--patch_size', a.patch, '--dest', run, '--no_progress', '--overwrite'),
         f'CPU; 1 epoch on {a.patch}² patches of all training slices (README: --epochs 200 --gpu, whole slices)'),
        ('test3d', sc('test3d', '--weights', run, '--split', 'val', '--source_dir', src, '--overwrite'), ''),
        ('metrics3d', sc('metrics3d', '--pred_dir', run/'eval'/'predictions', '--gt_dir', src, '--out', d/'metrics3d'/'results.csv',
                         '--overwrite'), 'not in the README section: scores test3d\'s stitched predictions again'),
        ('nnunet_export', sc('nnunet-export', src, '--raw_root', d/'nnUNet_raw', '--overwrite', '--retains', max(2, min(12, n//3)),
                             '--retains_test', max(1, min(4, n//10))), 'not in the README section: the export of 05a_nnunet'),
    ]


STUDY = dict(validate="none: the study's slicing asserts (sanity_ct/sanity_gt) are its only checks",
             fix="none: the study patched each resized slice while slicing (counted in its slicing time)",
             train="main.py not run: it imports crf_model, which needs crfseg (not installed here)",
             test3d="test3d.py not run: it imports crfseg and medpy (not installed here)",
             metrics3d="metrics3d.py not run: a module of test3d.py (medpy's hd), no command of its own")


def write_table(rows:list, d:Path, ceiling:float):
    "rehearsal.csv and rehearsal.md under `d`, atomically"
    from segthor_nb.core import atomic_path
    keys = ['stage', 'seconds', 'peak_gb', 'max_process_rss_gb', 'rc', 'study', 'study_seconds', 'study_peak_gb',
            'ratio_study_over_ours', 'note', 'command']
    buf = io.StringIO(); w = csv.DictWriter(buf, keys); w.writeheader(); w.writerows(rows)
    with atomic_path(d/'rehearsal.csv') as tmp: tmp.write_text(buf.getvalue())
    md = [f"Ceiling {ceiling:g} GB per stage. Peak: the process tree's summed PSS (or its largest process's peak RSS, if higher).", '',
          '| stage | seconds | peak (GB) | largest process RSS (GB) | the study | study s | study GB | study/ours time | note |',
          '|---|---|---|---|---|---|---|---|---|']
    f = lambda v, p=1: '' if v in ('', None) else f'{v:.{p}f}'
    for r in rows:
        md.append(f"| {r['stage']} | {f(r['seconds'])} | {f(r['peak_gb'], 2)} | {f(r['max_process_rss_gb'], 2)} | {r['study']} | "
                  f"{f(r['study_seconds'])} | {f(r['study_peak_gb'], 2)} | {f(r['ratio_study_over_ours'], 2)} | {r['note']} |")
    md += ['', 'Commands:', ''] + [f"- {r['stage']}: `{r['command']}`" for r in rows]
    with atomic_path(d/'rehearsal.md') as tmp: tmp.write_text('\n'.join(md) + '\n')


def study_row(row:dict, m:dict, what:str, log:Path):
    "Put a study script's measurement `m` (or its failure) into `row`, beside ours"
    if m['rc']:
        last = log.read_text(errors='replace').strip().splitlines()[-1:] or ['?']
        row['study'] = f"{what} failed (rc {m['rc']}): {last[0][:120].replace('|', '/')}"; return
    row.update(study=what, study_seconds=m['seconds'], study_peak_gb=m['peak']/GB, ratio_study_over_ours=m['seconds']/row['seconds'])


def run_study_slicing(a, d:Path, env:dict, row:dict):
    "The study's slice_segthor.py on the same tree and split sizes: time, memory, ratio to ours"
    script = study_script(Path(a.study_repo), ['src/slice_segthor.py', 'src/utils.py'], d/'study_src')
    if script is None: row['study'] = f'slice_segthor.py not run: {a.study_repo} unreadable'; return
    out = d/'study_SEGTHOR'; shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(script), '--source_dir', str(d/'segthor_train'), '--dest_dir', str(out), '--shape', '256', '256',
           '--retains', str(max(1, min(10, a.n_patients//4))), '-p', '1']
    study_row(row, measure(cmd, d/'logs'/'study_slice.log', env, cwd=script.parent), 'slice_segthor.py, 1 process (ours: 1)',
              d/'logs'/'study_slice.log')
    shutil.rmtree(out, ignore_errors=True)


def run_study_nnunet(a, d:Path, env:dict, row:dict):
    "The study's formatting_dataset.py (copies CT and GT.nii.gz into imagesTr/labelsTr; paths relative to its folder)"
    box = d/'study_nnunet'; shutil.rmtree(box, ignore_errors=True)
    script = study_script(Path(a.study_repo), ['src/nnUNet/formatting_dataset.py'], box/'src')
    if script is None: row['study'] = f'formatting_dataset.py not run: {a.study_repo} unreadable'; return
    (box/'data').mkdir(); (box/'data'/'segthor_train').symlink_to(d/'segthor_train')
    study_row(row, measure([sys.executable, str(script)], d/'logs'/'study_nnunet.log', env, cwd=box/'src'),
              'formatting_dataset.py: copies CT + tampered GT, no dataset.json, split or check', d/'logs'/'study_nnunet.log')
    shutil.rmtree(box, ignore_errors=True)


STUDY_RUNS = dict(slice=run_study_slicing, nnunet_export=run_study_nnunet)


def rehearse(a)->int:
    "Run every stage; 0 if all ran under the ceiling, else 1 (the stage named on stderr)"
    d = Path(a.dest).resolve(); (d/'logs').mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MKL_NUM_THREADS': '1',
           'nnUNet_raw': str(d/'nnUNet_raw'), 'nnUNet_preprocessed': str(d/'nnUNet_preprocessed'), 'nnUNet_results': str(d/'nnUNet_results')}
    rows, bad = [], None
    for name, cmd, note in stages(a, d):
        if name in a.skip: continue
        print(f"[rehearsal] {name}: {' '.join(map(str, cmd))}", flush=True)
        m = measure(list(map(str, cmd)), d/'logs'/f'{name}.log', env)
        row = dict(stage=name, seconds=m['seconds'], peak_gb=m['peak']/GB, max_process_rss_gb=m['max_process_rss']/GB,
                   rc=m['rc'], study=STUDY.get(name, ''), study_seconds='', study_peak_gb='', ratio_study_over_ours='',
                   note=note, command=' '.join(map(str, cmd)).replace(str(d), '$DEST'))
        if name in STUDY_RUNS and m['rc'] == 0 and not a.no_study:
            if a.study_repo: STUDY_RUNS[name](a, d, env, row)
            else: row['study'] = "not run: no --study_repo (a clone of the study's repository)"
        rows.append(row); write_table(rows, d, a.ceiling_gb)
        print(f"[rehearsal] {name}: {m['seconds']:.1f} s, peak {m['peak']/GB:.2f} GB, rc {m['rc']}", flush=True)
        if m['rc']: bad = f"stage {name} failed (rc {m['rc']}): see {d/'logs'/name}.log"; break
        if m['peak']/GB > a.ceiling_gb: bad = bad or f"stage {name}: peak RSS {m['peak']/GB:.2f} GB above the {a.ceiling_gb:g} GB ceiling"
    if bad: print(f"[rehearsal] {bad}", file=sys.stderr); return 1
    if not a.keep:
        for sub in ('segthor_train', 'SEGTHOR', 'results', 'nnUNet_raw', 'nnUNet_preprocessed', 'metrics3d', 'study_src'):
            shutil.rmtree(d/sub, ignore_errors=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['phantom']:   # the phantom stage, in its own process: root n_patients W H lo hi workers
        root, n, W, H, lo, hi, workers = argv[1], *map(int, argv[2:])
        write_tree(Path(root), n, (W, H), (lo, hi), workers=workers); return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dest', default=str(Path(tempfile.gettempdir())/'segthor_rehearsal'), help='work folder (data, logs, table)')
    ap.add_argument('--n_patients', type=int, default=40)
    ap.add_argument('--shape', type=int, nargs=2, default=[512, 512], help='in-plane size W H')
    ap.add_argument('--slices', type=int, nargs=2, default=[135, 284], help='slice counts spread over lo..hi')
    ap.add_argument('--patch', type=int, default=64, help='training patch size (bounds the CPU compute)')
    ap.add_argument('--workers', type=int, default=2, help='phantom writer processes')
    ap.add_argument('--ceiling_gb', type=float, default=CEILING_GB)
    ap.add_argument('--study_repo', default=os.environ.get('SEGTHOR_STUDY_REPO'),
                    help="a clone of the study's git repository (bare is fine); default $SEGTHOR_STUDY_REPO")
    ap.add_argument('--no_study', action='store_true', help="skip the study's scripts")
    ap.add_argument('--skip', nargs='*', default=[], help='stages to leave out (e.g. phantom, to reuse a tree in --dest)')
    ap.add_argument('--keep', action='store_true', help='keep the data and outputs (else only the table and logs stay)')
    return rehearse(ap.parse_args(argv))


if __name__ == '__main__': sys.exit(main())
