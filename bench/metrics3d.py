#!/usr/bin/env python
"""Benchmark: segthor_nb.metrics.metrics3d (the full 3D set, 4 organs) vs MONAI (Dice + HD95 + ASSD + surface Dice)
on the same 512×512×200 label-map pairs, in the same run, both on CPU.

Cases: 'compact' (one ellipsoid per organ, jittered prediction), 'scattered' (each organ 30 small blobs across the whole
volume; the prediction jitters, drops and adds blobs) and 'phantom' (the data_fix phantom's labels; the prediction is
each organ shifted by 1–2 voxels). MONAI is called per organ on (1, 1, X, Y, Z) one-hot float tensors (its documented
input), the one-hot conversion included in its time.

End to end (--process N): N 'compact' pairs written as NIfTI folders and scored by a fresh Python process
(`score_folders` + `write_results`: start-up, imports, reading, all metrics, the CSV), its wall time against MONAI's
in-process time for the same pairs and metrics (Dice, HD, HD95, ASSD, NSD; reading not counted).

Usage: python bench/metrics3d.py [--shape 512 512 200] [--repeats 3] [--cases compact scattered phantom] [--process 2]
Prints seconds per volume pair (ours: best of --repeats; MONAI: one run), the speed ratio, and the largest absolute
difference between our values and MONAI's over the 4 organs and the four shared metrics. Run it alone, with
OMP_NUM_THREADS=1.
"""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from segthor_nb.metrics import metrics3d, monai_metrics, synthetic_pair
from segthor_nb.data_fix import Geometry, make_phantom, save_volume


def phantom_pair(shape, seed=0):
    "Phantom labels and a prediction with each organ shifted by 1–2 voxels; the phantom's own spacing"
    _, gt, geom = make_phantom(shape[:2], shape[2], seed=seed)
    rng, pred = np.random.default_rng(seed), np.zeros_like(gt)
    for c in (1, 2, 3, 4):
        pred[np.roll(gt == c, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))] = c
    return pred, gt, geom.spacing


SCORE = ("import sys; from segthor_nb.metrics import score_folders, write_results; "
         "print(write_results(score_folders(sys.argv[1], sys.argv[2]), sys.argv[3], overwrite=True))")


def process_vs_monai(shape, n_pairs, spacing=(0.9, 0.9, 2.5)):
    "Wall time of a fresh process scoring `n_pairs` NIfTI pairs vs MONAI in-process on the same arrays"
    geom = Geometry.from_affine(np.diag([*spacing, 1.]), shape)
    with tempfile.TemporaryDirectory() as tmp:
        tmp, pairs = Path(tmp), [synthetic_pair(shape, 'compact', seed=s) for s in range(n_pairs)]
        for i, (pred, gt) in enumerate(pairs):
            save_volume(pred, geom, tmp/f'pred/Patient_{i + 1:02d}.nii.gz'); save_volume(gt, geom, tmp/f'gt/Patient_{i + 1:02d}.nii.gz')
        t = time.perf_counter()
        r = subprocess.run([sys.executable, '-c', SCORE, tmp/'pred', tmp/'gt', tmp/'results.csv'], capture_output=True, text=True)
        t_process = time.perf_counter() - t
        assert r.returncode == 0, r.stderr
    t = time.perf_counter()
    for pred, gt in pairs: monai_metrics(pred, gt, spacing)
    t_monai = time.perf_counter() - t
    print(f"end to end, {n_pairs} pairs {shape}: process {t_process:.2f} s, MONAI in-process {t_monai:.2f} s, "
          f"ratio {t_process / t_monai:.3f} ({t_monai / t_process:.1f}× faster)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', type=int, nargs=3, default=[512, 512, 200])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--cases', nargs='*', default=['compact', 'scattered', 'phantom'])
    ap.add_argument('--process', type=int, default=2, help='pairs for the end-to-end process timing (0: skip)')
    a = ap.parse_args()
    shape = tuple(a.shape)
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, shape {shape}")
    if a.process: process_vs_monai(shape, a.process)
    print(f"{'case':10} {'voxels/organ (gt)':>32} {'ours s':>8} {'MONAI s':>8} {'speed-up':>8} {'max |diff|':>11}  per metric")
    for case in a.cases:
        if case == 'phantom': pred, gt, spacing = phantom_pair(shape)
        else: (pred, gt), spacing = synthetic_pair(shape, case, seed=0), (0.9, 0.9, 2.5)
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter(); ours = metrics3d(pred, gt, spacing); times.append(time.perf_counter() - t)
        t = time.perf_counter(); ref = monai_metrics(pred, gt, spacing, metrics=('dice', 'hd95', 'assd', 'nsd'))
        t_monai = time.perf_counter() - t
        diff = {k: np.nanmax(np.abs(ours[k].to_numpy() - ref[k].to_numpy())) for k in ref.columns}
        counts = '/'.join(str(int(n)) for n in ours['n_gt'])
        print(f"{case:10} {counts:>32} {min(times):8.3f} {t_monai:8.2f} {t_monai / min(times):7.1f}× {max(diff.values()):11.2e}  "
              + ', '.join(f"{k} {v:.1e}" for k, v in diff.items()))


if __name__ == '__main__': main()
