#!/usr/bin/env python
"""Prediction cost of one SEGTHOR-size CT through `segthor-predict`'s code (`segthor_nb.predict.predict`): wall time,
peak memory, and the split between the network's forward passes and everything else (reading, slicing or resampling,
sliding-window bookkeeping, stitching, resizing back, writing).

The CT: the data_fix phantom at --size (default 512 × 512 × 200, SEGTHOR's size), written as NIfTI with 0.9 mm
in-plane and 2.5 mm slice spacing; or --ct PATH for a real one. The runs: 2D ENet (slices of --slice² pixels, the
study's 256) and the 3D U-Net (`unet3d`, --unet_size, --patch voxels per window, the training defaults), each trained
for one short epoch on a tiny phantom (random-initialised weights, nothing downloaded): prediction needs only the
run's config and weights, and costs the same whatever the weights are.

Each model predicts in its own subprocess (so its peak RSS is its own; the baseline is the peak before `predict` is
called: imports and the phantom-free start-up). Forward time: a forward pre-hook and a forward hook on the loaded
network sum `time.perf_counter` deltas (CUDA synchronised when on the GPU); the package is not changed, only its
`load_run` is wrapped in the child. Other = total − forward; the reference of each row is its own forward time, and
the target is other ≤ forward (ratio ≤ 1). --profile N prints the N largest cumulative entries of a cProfile of each
prediction (a second, profiled run).

Usage: python bench/predict.py [--size 512 512 200] [--ct PATH] [--gpu] [--profile 25] [--keep DIR]
Run it alone, with OMP_NUM_THREADS=1.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

SPACING = (0.9, 0.9, 2.5)
NOT_MEASURED = {'ENet 2.5D (k = 2)': 'no 2.5D input mode in the package yet',
                'nnU-Net 3d_fullres': 'needs a trained nnU-Net model (05a exports the data; nothing here trains one)'}


def phantom_ct(dest:Path, size:tuple)->Path:
    "The data_fix phantom at `size`, written as a NIfTI CT with SEGTHOR's spacing (0.9, 0.9, 2.5 mm)"
    import numpy as np
    from segthor_nb.data_fix import Geometry, make_phantom, save_volume
    ct, _, _ = make_phantom(size[:2], size[2], seed=0)
    (X, Y, _), (dx, dy, dz) = ct.shape, SPACING
    affine = np.array([[-dx, 0, 0, (X - 1)/2*dx], [0, -dy, 0, (Y - 1)/2*dy], [0, 0, dz, -size[2]*dz/2], [0, 0, 0, 1]])
    return save_volume(ct, Geometry.from_affine(affine, ct.shape), dest/'Patient_01.nii.gz')


def make_runs(work:Path, slice_side:int, patch:list, unet_size:str)->dict:
    "One-epoch 2D ENet and 3D U-Net runs on a tiny phantom: {model label: run folder}"
    import torch
    from segthor_nb.data_fix import write_phantom
    from segthor_nb.slicing import slice_tree
    from segthor_nb.train import train
    from segthor_nb.train3d import train3d
    torch.manual_seed(0)
    tree = write_phantom(work/'tree', n_patients=2, shape=(32, 32), n_slices=16, seed=0, progress=False)
    slice_tree(tree, work/'sliced', (slice_side, slice_side), retains=1, progress=False)
    train(dataset='PHANTOM', data_root=str(work/'sliced'), dest=str(work/'enet'), model='ENet', epochs=1, batch_size=8,
          num_workers=0, progress=False, seed=0)
    train3d(source_dir=str(tree), dest=str(work/'unet3d'), retains=1, model_cfg={'size': unet_size}, patch_size=patch,
            epochs=1, steps_per_epoch=1, batch_size=1, augment=False, num_workers=0, progress=False)
    return {'ENet 2D': work/'enet', f'3D U-Net ({unet_size})': work/'unet3d'}


def peak_rss_mb()->float:
    "This process's peak RSS (MB): VmHWM where Linux has it (ru_maxrss there keeps a forking parent's peak across exec)"
    f = Path('/proc/self/status')
    if f.exists(): return next(int(l.split()[1]) for l in f.read_text().splitlines() if l.startswith('VmHWM:'))/1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/(2**20 if sys.platform == 'darwin' else 1024)


def child(run:str, ct:str, out:str, gpu:bool, profile:int)->dict:
    "Predict `ct` with `run` through segthor_nb.predict.predict; time the forward passes by hooks"
    import torch
    import segthor_nb.predict as P
    cuda = gpu and torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fwd = dict(s=0., n=0, t0=0.)
    def pre(m, a): sync(); fwd['t0'] = time.perf_counter()
    def post(m, a, o): sync(); fwd['s'] += time.perf_counter() - fwd['t0']; fwd['n'] += 1
    load_run = P.load_run
    def hooked(*a, **kw):
        net = load_run(*a, **kw); net.register_forward_pre_hook(pre); net.register_forward_hook(post)
        return net
    base, prof, P.load_run = peak_rss_mb(), None, hooked
    if profile:
        import cProfile; prof = cProfile.Profile(); prof.enable()
    try:
        t = time.perf_counter()
        P.predict([ct], [run], out, gpu=cuda, overwrite=True, progress=False)
        sync(); total = time.perf_counter() - t
    finally: P.load_run = load_run
    if prof:
        import io, pstats; prof.disable(); s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats('cumulative').print_stats(profile); print(s.getvalue(), file=sys.stderr)
    return dict(total_s=total, forward_s=fwd['s'], forward_calls=fwd['n'], peak_rss_mb=peak_rss_mb(),
                base_rss_mb=base, gpu_peak_mb=torch.cuda.max_memory_allocated()/2**20 if cuda else None,
                device='cuda' if cuda else 'cpu', threads=torch.get_num_threads())


def measure(run:Path, ct:Path, out:Path, gpu:bool, profile:int=0, inprocess:bool=False)->dict:
    "`child` in a fresh process (or in this one); its row"
    if inprocess: return child(str(run), str(ct), str(out), gpu, profile)
    argv = [sys.executable, __file__, '--child', str(run), '--ct', str(ct), '--out', str(out), *(['--gpu'] if gpu else []),
            '--profile', str(profile)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None if profile else subprocess.PIPE, text=True)
    if p.returncode: raise SystemExit(f"{run}: prediction failed\n{(p.stderr or '')[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(rows:dict)->str:
    "The markdown table of the measured rows, and the models not measured"
    lines = ["| model | total s | forward s | other s | other / forward | peak RSS MB | baseline RSS MB | other ≤ forward |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        other = r['total_s'] - r['forward_s']
        lines.append(f"| {m} | {r['total_s']:.2f} | {r['forward_s']:.2f} | {other:.2f} | {other/r['forward_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['base_rss_mb']:.0f} | {'yes' if other <= r['forward_s'] else 'NO'} |")
    return '\n'.join(lines + [f"| {m} | not measured: {why} | | | | | | |" for m, why in NOT_MEASURED.items()])


def main(argv:list=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', type=int, nargs=3, default=[512, 512, 200], help='phantom CT X Y Z (ignored with --ct)')
    ap.add_argument('--ct', default='', help='a real CT (.nii.gz) instead of the phantom')
    ap.add_argument('--slice', type=int, default=256, help='2D slice side (the study: 256)')
    ap.add_argument('--patch', type=int, nargs=3, default=[96, 96, 48], help='3D window X Y Z (training default)')
    ap.add_argument('--unet_size', default='small', help='unet3d size: tiny, small (default) or base')
    ap.add_argument('--gpu', action='store_true', help='predict on CUDA when available')
    ap.add_argument('--profile', type=int, default=0, help='also print the top N cProfile entries of each prediction')
    ap.add_argument('--keep', default='', help='work here (kept) instead of a temporary folder')
    ap.add_argument('--inprocess', action='store_true', help='no subprocess per model (the test: fast; peak RSS is then not per model)')
    ap.add_argument('--child', default='', help=argparse.SUPPRESS)
    ap.add_argument('--out', default='', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child: print(json.dumps(child(a.child, a.ct, a.out, a.gpu, a.profile))); return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.keep or tmp); work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        ct = Path(a.ct) if a.ct else phantom_ct(work/'ct', tuple(a.size))
        runs = make_runs(work, a.slice, a.patch, a.unet_size)
        print(f"set-up (CT, runs) {time.perf_counter() - t:.0f} s", file=sys.stderr)
        rows = {}
        for m, run in runs.items():
            t = time.perf_counter(); rows[m] = measure(run, ct, work/'out'/run.name, a.gpu, 0, a.inprocess)
            print(f"{m}: {time.perf_counter() - t:.0f} s with start-up", file=sys.stderr)
        import nibabel as nib
        r0 = next(iter(rows.values()))
        calls = ', '.join(f"{m} {r['forward_calls']} calls" for m, r in rows.items())
        print(f"CT {ct.name if a.ct else 'phantom'} {nib.load(ct).shape}, spacing {tuple(round(float(z), 3) for z in nib.load(ct).header.get_zooms()[:3])} mm; "
              f"device {r0['device']}{' (--gpu: no CUDA, ran on CPU)' if a.gpu and r0['device'] == 'cpu' else ''}, torch threads {r0['threads']}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; ENet 2D slices {a.slice}², 3D windows {tuple(a.patch)} overlap 0.5; "
              f"reference of each row: its own forward passes ({calls})\n")
        print(table(rows))
        if r0['gpu_peak_mb'] is not None: print('\nGPU peak MB: ' + ', '.join(f"{m} {r['gpu_peak_mb']:.0f}" for m, r in rows.items()))
        for m, run in runs.items():
            if a.profile: print(f"\n## cProfile, {m}", file=sys.stderr, flush=True); measure(run, ct, work/'out'/run.name, a.gpu, a.profile, a.inprocess)


if __name__ == '__main__': main()
