#!/usr/bin/env python
"""CPU cost of every model in the registry: params, trainable params, forward and forward+backward seconds per
slice, peak RSS. Reference: ENet at 256², measured in the same run; every time is also given as a ratio to it.

Each model runs in its own subprocess (so its peak RSS is its own) with torch.set_num_threads(2). Weights are
random and built locally (nothing is downloaded); full-size SAMed / samed_fast are timed for 1-2 iterations only
(2 forwards, 1 forward+backward). Times are the best of the timed iterations.

Usage: python bench/models.py [--only REGEX] [--no-full] [--csv bench/out/models.csv]
"""
import argparse, json, os, re, resource, subprocess, sys, time, warnings

# name, registry name, cfg, input side, batch, timed iterations (best of; after one untimed warm-up unless full size)
CASES = [
    ('ENet',                 'ENet',       {},                  256, 2, 5),
    ('shallow',              'shallow',    {},                  256, 2, 5),
    ('samed tiny',           'samed',      {'size': 'tiny'},    256, 2, 5),
    ('samed_fast tiny',      'samed_fast', {'size': 'tiny'},    256, 2, 5),
    ('SAM2UNet tiny',        'SAM2UNet',   {'size': 'tiny'},    256, 2, 5),
    ('SAM2UNet hiera_t',     'SAM2UNet',   {'size': 'hiera_t'}, 256, 2, 3),
    ('SAM2UNet hiera_l',     'SAM2UNet',   {'size': 'hiera_l'}, 256, 1, 2),
    ('samed_fast ViT-B 512', 'samed_fast', {'size': 'vit_b'},   256, 1, 1),
    ('samed ViT-B 1024',     'samed',      {'size': 'vit_b'},   256, 1, 1),
]
FULL = {'samed_fast ViT-B 512', 'samed ViT-B 1024'}
REFERENCE = 'ENet'

def measure(label:str)->dict:
    "Build one case, time it, return its row (runs inside the child process)"
    import torch, torch.nn.functional as F
    from segthor_nb.models import get_model, trainable_summary
    torch.set_num_threads(2); torch.manual_seed(0)
    _, name, cfg, side, batch, iters = next(c for c in CASES if c[0] == label)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        t0 = time.perf_counter(); model = get_model(name, 5, **cfg); build_s = time.perf_counter() - t0
    x, y = torch.rand(batch, 1, side, side), torch.randint(0, 5, (batch, side, side))
    warm = label not in FULL
    def fwd():
        with torch.no_grad(): model(x)
    def fwd_bwd():
        model.zero_grad(set_to_none=True); F.cross_entropy(model(x), y).backward()
    def timed(fn, n):
        if warm: fn()
        ts = []
        for _ in range(n): t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return min(ts) / batch   # best of n (timeit's rule): other jobs on a shared machine only add time
    model.eval(); f = timed(fwd, iters if warm else 2)   # full size: 2 forwards, the first warms up
    model.train(); fb = timed(fwd_bwd, iters)
    return dict(model=label, input=f'{batch}x1x{side}x{side}', **trainable_summary(model), build_s=round(build_s, 2),
                fwd_s=f, fwd_bwd_s=fb, iters=iters, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', default='', help='regex on the case names (ENet, the reference, always runs)')
    ap.add_argument('--no-full', action='store_true', help='skip the full-size SAMed / samed_fast')
    ap.add_argument('--csv', default='', help='also write the table here')
    ap.add_argument('--child', default='', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: print(json.dumps(measure(a.child))); return
    import pandas as pd
    rows = []
    for label, *_ in CASES:
        if label != REFERENCE and (not re.search(a.only, label) or (a.no_full and label in FULL)): continue
        t = time.time()
        p = subprocess.run([sys.executable, __file__, '--child', label], capture_output=True, text=True,
                           env={**os.environ, 'OMP_NUM_THREADS': '2'})
        if p.returncode: print(f"{label}: FAILED\n{p.stderr[-3000:]}"); continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"{label}: done in {time.time()-t:.0f} s", file=sys.stderr)
    df = pd.DataFrame(rows).set_index('model')
    ref = df.loc[REFERENCE]
    df['fwd_x_ENet'], df['fwd_bwd_x_ENet'] = df.fwd_s / ref.fwd_s, df.fwd_bwd_s / ref.fwd_bwd_s
    with pd.option_context('display.width', 200, 'display.max_columns', 20, 'display.float_format', '{:.3g}'.format):
        print(f"CPU, torch.set_num_threads(2), K=5, seconds per slice (best of `iters`); ratios against {REFERENCE} (256²) "
              f"in this run; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(df.drop(columns=['frozen']).to_string())
    if a.csv: os.makedirs(os.path.dirname(a.csv) or '.', exist_ok=True); df.to_csv(a.csv)

if __name__ == '__main__': main()
