#!/usr/bin/env python
"""Training throughput on CPU: ENet, batch 8, 256² slices of a phantom, split into data time and compute time.

Data: the loader alone (slices/s delivered by the DataLoader, nothing else), three ways, measured in the same run:
ours (`SliceTensors`: the decoded-once arrays, uint8 class maps, one-hot on the device), `SliceDataset` items (01_slicing,
one-hot float targets built per item) and the study's loader (PIL-decodes both PNGs of every slice at every epoch, one-hot
per item). Then one training step at a time through `Trainer` (the code `train` runs): data time = loader + to device +
one-hot (+ augmentation, reported separately), compute time = forward + backward + optimizer step. The loader must deliver
≥ 2,000 slices/s; the ratio loader/compute says how many times faster than the model the data arrives.

Usage: python bench/train.py [--patients 3] [--slices 64] [--batches 10] [--workers 0 2] [--threads 2] [--data DIR] [--keep]
"""
import argparse, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from segthor_nb.data_fix import write_phantom
from segthor_nb.core import TrainConfig
from segthor_nb.slicing import SliceDataset, SliceTensors, slice_tree, make_loader
from segthor_nb.train import Trainer, AdaptiveSampler, augment_batch, one_hot, deep_supervision_loss, float_outputs

B, SIZE = 8, 256


class StudySlices(Dataset):
    "The study's loader: PIL-decode image and label PNGs of every item at every epoch, /255, one-hot (K, H, W) per item"
    def __init__(self, split_dir, K=5):
        self.files = sorted(zip(sorted((split_dir/'img').glob('*.png')), sorted((split_dir/'gt').glob('*.png'))))
        self.K = K
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        ip, gp = self.files[i]
        img = torch.tensor(np.array(Image.open(ip).convert('L'))[None]/255, dtype=torch.float32)
        gt = torch.tensor(np.array(Image.open(gp))//63, dtype=torch.int64)
        return dict(images=img, gts=F.one_hot(gt, self.K).permute(2, 0, 1), stems=ip.stem)


def loader_rate(ds, workers, passes=3):
    "Best slices/s over `passes` full passes of a shuffling DataLoader (batch 8)"
    dl = make_loader(ds, B, num_workers=workers, sampler=AdaptiveSampler(np.ones(len(ds), bool), 1, curriculum=False))
    best = 0.
    for _ in range(passes):
        t, n = time.perf_counter(), 0
        for b in dl: n += len(b['images'])
        best = max(best, n/(time.perf_counter() - t))
    return best


def step_times(tr, n_batches, kind=None):
    "Per batch: (data s, augmentation s, compute s), after two warm-up batches"
    out, it = [], iter(tr.loader)
    tr.net.train()
    for k in range(n_batches + 2):
        t0 = time.perf_counter()
        try: batch = next(it)
        except StopIteration: it = iter(tr.loader); batch = next(it)
        x, y, idx = tr.batch_to_device(batch)
        t1 = time.perf_counter()
        if kind: x, y = augment_batch(x, y, [(0, 0, int(i)) for i in idx], kind)
        t2 = time.perf_counter()
        loss = deep_supervision_loss(tr.loss_fn, float_outputs(tr.net(x, aux=True)), one_hot(y, tr.K))
        loss.backward(); tr.optimizer_step()
        t3 = time.perf_counter()
        if k >= 2: out.append((t1 - t0, t2 - t1, t3 - t2))
    return np.array(out).mean(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--patients', type=int, default=3)
    ap.add_argument('--slices', type=int, default=64)
    ap.add_argument('--batches', type=int, default=10, help='timed training steps')
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--threads', type=int, default=2, help='torch threads for the model')
    ap.add_argument('--data', type=Path, default=None, help='work folder (default: a temporary one)')
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = a.data or Path(tempfile.mkdtemp(prefix='bench_train_'))
    root = work/'sliced'
    if not (root/'val'/'geometry.json').exists():
        src = write_phantom(work/'phantom', a.patients, (SIZE, SIZE), a.slices, seed=0, workers=2)
        slice_tree(src, root, (SIZE, SIZE), retains=1, processes=2, progress=False)
    ds = SliceDataset(root, 'train', 5)
    print(f"phantom: {len(ds)} training slices of {SIZE}², batch {B}, torch threads {torch.get_num_threads()}")

    print("\nloader alone (slices/s, best of 3 passes):")
    rates = {}
    for w in a.workers:
        rates[w] = dict(ours=loader_rate(SliceTensors(ds), w), slicedataset=loader_rate(ds, w), study=loader_rate(StudySlices(root/'train'), w, passes=1))
        r = rates[w]
        print(f"  workers {w}: ours {r['ours']:8.0f} | SliceDataset one-hot items {r['slicedataset']:7.0f} | study (PNG decode per item) {r['study']:6.0f}"
              f" | ours/study {r['ours']/r['study']:5.1f}×")

    cfg = TrainConfig(dataset='PHANTOM', data_root=str(root), dest=str(work/'unused'), model='ENet', batch_size=B, epochs=1,
                      loss='dce', num_workers=a.workers[0], deterministic=True, progress=False)
    tr = Trainer(cfg)
    data_s, _, compute_s = step_times(tr, a.batches)
    aug = {k: step_times(tr, max(3, a.batches//3), k)[1] for k in ('study', 'nnunet')}
    best_loader = max(r['ours'] for r in rates.values())
    print(f"\nENet training step (workers {a.workers[0]}), per batch of {B}:")
    print(f"  data (loader + device + one-hot) {data_s*1e3:7.1f} ms  = {B/data_s:8.0f} slices/s")
    print(f"  compute (forward+backward+step)  {compute_s*1e3:7.1f} ms  = {B/compute_s:8.1f} slices/s")
    for k, s in aug.items(): print(f"  augmentation {k:6s}              {s*1e3:7.1f} ms  = {B/s:8.0f} slices/s")
    print(f"  overall (no augmentation)        {B/(data_s + compute_s):8.1f} slices/s, data share {data_s/(data_s + compute_s):.1%}")
    print(f"\nloader alone {best_loader:.0f} slices/s (target ≥ 2000: {'met' if best_loader >= 2000 else 'NOT met'}); "
          f"ratio loader/compute = {best_loader/(B/compute_s):.0f}×")
    if not a.keep and a.data is None: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__': main()
