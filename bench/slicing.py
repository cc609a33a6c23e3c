#!/usr/bin/env python
"""Slicing speed on SEGTHOR-sized volumes: ours (`segthor_nb.slicing.slice_tree`) against the study's method, measured in
the same run on the same phantom volumes.

The study's method (its slice_segthor.py): nibabel read, float32 min-max to uint8, `skimage.transform.resize` slice by
slice (order 1 for the CT, 0 for the labels, mode 'constant', no anti-aliasing), `skimage.io.imsave` PNGs (imageio/Pillow
defaults), one process per patient (`Pool(p).map`).

Prints: patients/s of both with `--processes` workers and their ratio; the per-patient time split into reading (NIfTI
inflate), normalising, resizing, PNG encoding and writing files, in one process; the physical floor per patient
(inflating the two .nii.gz files and writing the bytes of our PNGs as the same number of files); and whether both methods
wrote identical pixels.

Usage: python bench/slicing.py [--patients 4] [--slices 160] [--processes 2] [--repeats 2] [--data DIR] [--keep]
"""
import argparse, os, shutil, tempfile, time, warnings
from multiprocessing import Pool
from pathlib import Path
import numpy as np, nibabel as nib, cv2
from skimage.io import imsave
from skimage.transform import resize
from segthor_nb.core import atomic_path
from segthor_nb.data_fix import write_phantom
from segthor_nb.slicing import INFLATERS, slice_tree, read_volume, IntensityMap, resize_slice, resize_labels, read_png, PNG_IMAGE, PNG_LABELS

SHAPE = (256, 256)


def study_slice_patient(args):
    "The study's slicing of one patient, as its slice_segthor.py did it"
    pid, src, dest = args
    ct = np.asarray(nib.load(str(src/'train'/pid/f'{pid}.nii.gz')).dataobj)
    gt = np.asarray(nib.load(str(src/'train'/pid/'GT.nii.gz')).dataobj)
    c = ct.astype(np.float32); s = c - c.min(); norm = (255*(s/s.max())).astype(np.uint8)
    for z in range(ct.shape[2]):
        img = resize(norm[:, :, z], SHAPE, mode='constant', preserve_range=True, anti_aliasing=False).astype(np.uint8)
        lab = resize(gt[:, :, z], SHAPE, mode='constant', preserve_range=True, anti_aliasing=False, order=0).astype(np.uint8)
        lab *= 63
        for sub, a in (('img', img), ('gt', lab)):
            (dest/sub).mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                imsave(str(dest/sub/f'{pid}_{z:04d}.png'), a)


def study_breakdown(pid, src, dest):
    "The study's per-patient time by stage, one process"
    t = dict(read=0., normalise=0., resize=0., png=0., write=0.)
    t0 = time.perf_counter()
    ct = np.asarray(nib.load(str(src/'train'/pid/f'{pid}.nii.gz')).dataobj)
    gt = np.asarray(nib.load(str(src/'train'/pid/'GT.nii.gz')).dataobj)
    t1 = time.perf_counter(); t['read'] = t1 - t0
    c = ct.astype(np.float32); s = c - c.min(); norm = (255*(s/s.max())).astype(np.uint8)
    t['normalise'] = time.perf_counter() - t1
    for sub in ('img', 'gt'): (dest/sub).mkdir(parents=True, exist_ok=True)
    for z in range(ct.shape[2]):
        a = time.perf_counter()
        img = resize(norm[:, :, z], SHAPE, mode='constant', preserve_range=True, anti_aliasing=False).astype(np.uint8)
        lab = resize(gt[:, :, z], SHAPE, mode='constant', preserve_range=True, anti_aliasing=False, order=0).astype(np.uint8)*63
        b = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            imsave(str(dest/'img'/f'{pid}_{z:04d}.png'), img); imsave(str(dest/'gt'/f'{pid}_{z:04d}.png'), lab)
        t['resize'] += b - a; t['write'] += time.perf_counter() - b   # imsave encodes and writes in one call
    return t


def ours_breakdown(pid, src, dest):
    "Our per-patient time by stage, one process (the loop of `slice_patient`, with clocks)"
    t = dict(read=0., normalise=0., resize=0., png=0., write=0.)
    t0 = time.perf_counter()
    ct, _ = read_volume(src/'train'/pid/f'{pid}.nii.gz', 'ct'); gt, _ = read_volume(src/'train'/pid/'GT.nii.gz', 'gt')
    t1 = time.perf_counter(); t['read'] = t1 - t0
    to_uint8 = IntensityMap(ct); t['normalise'] += time.perf_counter() - t1
    for z in range(ct.shape[2]):
        a = time.perf_counter(); c8 = to_uint8(ct[:, :, z])
        b = time.perf_counter(); img, lab = resize_slice(c8, SHAPE), resize_labels(gt[:, :, z], SHAPE)*63
        c = time.perf_counter(); bufs = [cv2.imencode('.png', img, PNG_IMAGE)[1], cv2.imencode('.png', lab, PNG_LABELS)[1]]
        d = time.perf_counter()
        for sub, buf in zip(('img', 'gt'), bufs):
            with atomic_path(dest/sub/f'{pid}_{z:04d}.png') as tmp: tmp.write_bytes(buf.data)
        e = time.perf_counter()
        t['normalise'] += b - a; t['resize'] += c - b; t['png'] += d - c; t['write'] += e - d
    return t


def clean(d):
    "An empty folder (every measurement creates new files, as a slicing run does; replacing old ones costs more)"
    shutil.rmtree(d, ignore_errors=True); (d/'img').mkdir(parents=True); (d/'gt').mkdir(parents=True); return d


def floor(pid, src, ours_dir, scratch):
    "Inflate the patient's two .nii.gz files (with the inflater ours uses), and write the bytes of our PNGs for it as the same number of plain files"
    t0 = time.perf_counter()
    inflate = next(iter(INFLATERS.values()))
    for f in (src/'train'/pid/f'{pid}.nii.gz', src/'train'/pid/'GT.nii.gz'): inflate(f.read_bytes())
    t1 = time.perf_counter()
    sizes = [p.stat().st_size for p in sorted(ours_dir.rglob(f'{pid}_*.png'))]
    shutil.rmtree(scratch, ignore_errors=True); scratch.mkdir(parents=True)   # new files, as slicing creates them
    blob = os.urandom(max(sizes))
    for i, n in enumerate(sizes): (scratch/f'{i}.bin').write_bytes(blob[:n])
    return dict(read=t1 - t0, write=time.perf_counter() - t1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--patients', type=int, default=4)
    ap.add_argument('--slices', type=int, default=160)
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--processes', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=3, help='runs of each measurement, alternating methods (the fastest counts)')
    ap.add_argument('--data', default=None, help='phantom tree to reuse (written there if missing)')
    ap.add_argument('--keep', action='store_true', help='keep the scratch folder')
    a = ap.parse_args()
    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix='bench_slicing_'))
    src = Path(a.data) if a.data else work/'phantom'
    ids = [f'Patient_{i:02d}' for i in range(1, a.patients + 1)]
    if not all((src/'train'/p/'GT.nii.gz').exists() for p in ids):
        t = time.time(); write_phantom(src, a.patients, (a.size, a.size), a.slices, seed=0, workers=a.processes)
        print(f"wrote {a.patients} phantom patients {a.size}²×{a.slices} in {time.time() - t:.0f} s (not timed below)")
    shape = nib.load(str(src/'train'/ids[0]/'GT.nii.gz')).shape
    print(f"{len(ids)} patients of {shape}, {a.processes} processes, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"inflating with {next(iter(INFLATERS))}")

    # end to end, each method `repeats` times, alternating
    best = dict(ours=np.inf, study=np.inf)
    for r in range(a.repeats):
        d = work/f'ours{r}'; t = time.perf_counter()
        slice_tree(src, d, SHAPE, retains=1, processes=a.processes, progress=False)
        best['ours'] = min(best['ours'], time.perf_counter() - t)
        d = work/f'study{r}'; t = time.perf_counter()
        with Pool(a.processes) as pool: pool.map(study_slice_patient, [(p, src, d) for p in ids])
        best['study'] = min(best['study'], time.perf_counter() - t)

    # same pixels?
    ours_img = {p.relative_to(work/'ours0').parts[-2] + '/' + p.name: p for p in (work/'ours0').rglob('*.png')}
    study_img = {p.relative_to(work/'study0').parts[-2] + '/' + p.name: p for p in (work/'study0').rglob('*.png')}
    assert sorted(ours_img) == sorted(study_img), 'the two methods wrote different files'
    diff = max(int(np.abs(read_png(ours_img[k]).astype(int) - read_png(study_img[k])).max()) for k in ours_img)
    size = lambda d: sum(p.stat().st_size for p in d.rglob('*.png'))/len(ids)/2**20

    # per-patient stages, one process: per patient the fastest of `repeats` runs (the least disturbed by other load)
    fastest = lambda runs: min(runs, key=lambda t: sum(t.values()))
    st, ou, fl = [], [], []
    for p in ids:
        runs = [(study_breakdown(p, src, clean(work/'bd_study')), ours_breakdown(p, src, clean(work/'bd_ours')), floor(p, src, work/'ours0', work/'floor'))
                for _ in range(a.repeats)]
        for acc, k in ((st, 0), (ou, 1), (fl, 2)): acc.append(fastest([r[k] for r in runs]))
    mean = lambda ts, k: float(np.mean([t[k] for t in ts]))
    stages = ['read', 'normalise', 'resize', 'png', 'write']
    print(f"\nidentical pixels (all {len(ours_img)} PNGs): {'yes' if diff == 0 else f'NO, max difference {diff}'}; "
          f"MiB per patient: ours {size(work/'ours0'):.1f}, study {size(work/'study0'):.1f}")
    print(f"\nend to end, {a.processes} processes (fastest of {a.repeats}):")
    print("| method | seconds | patients/s |\n|---|---|---|")
    for k in ('study', 'ours'): print(f"| {k} | {best[k]:.2f} | {len(ids)/best[k]:.3f} |")
    print(f"\nspeed ratio ours/study: {best['study']/best['ours']:.2f}×")
    print(f"\nper patient, one process, mean over patients of the fastest of {a.repeats} (seconds; png = encode, write = files; the study's imsave does both, counted as write):")
    print("| method | " + " | ".join(stages) + " | total |\n|---|" + "---|"*(len(stages) + 1))
    for name, ts in (('study', st), ('ours', ou)):
        tot = sum(mean(ts, k) for k in stages)
        print(f"| {name} | " + " | ".join(f"{mean(ts, k):.3f} ({mean(ts, k)/tot:.0%})" for k in stages) + f" | {tot:.3f} |")
    ftot = mean(fl, 'read') + mean(fl, 'write')
    print(f"| floor: inflate + write the same bytes | {mean(fl, 'read'):.3f} | – | – | – | {mean(fl, 'write'):.3f} | {ftot:.3f} |")
    print(f"\nours is {sum(mean(ou, k) for k in stages)/ftot:.2f}× the floor; the study {sum(mean(st, k) for k in stages)/ftot:.2f}×")
    if a.keep: print(f"kept {work}")
    else: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__': main()
