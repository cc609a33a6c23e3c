"""The README's papermill line runs the same experiment as the `segthor-train` line above it: both are parsed the way
their tools parse them (argparse; papermill's `-p` typing) and must give the same `TrainConfig`."""
import dataclasses, json, re, shlex, sys
from pathlib import Path
from papermill.cli import _resolve_type
import segthor_nb.cli as cli
import segthor_nb.train as train_mod
from segthor_nb.core import TrainConfig
from segthor_nb.train import papermill_config

ROOT = Path(__file__).resolve().parents[1]


def readme_line(start:str)->str:
    "The README's shell line that starts with `start` (after any `mkdir ... &&`), without its comment"
    for l in (ROOT/'README.md').read_text().splitlines():
        cmd = l.split(' && ')[-1]
        if cmd.startswith(start): return cmd.split('  #')[0]
    raise AssertionError(f"README.md has no line starting with {start!r}")


def cli_config(line:str, monkeypatch)->TrainConfig:
    "The TrainConfig `segthor-train` builds from a command line (training itself replaced by a recorder)"
    seen = []
    monkeypatch.setattr(train_mod, 'train', lambda cfg: seen.append(cfg) or dict(best=None, dest=cfg.dest))
    monkeypatch.setattr(sys, 'argv', shlex.split(line))
    cli.segthor_train()
    return seen[0]


def papermill_params(line:str)->dict:
    "The `-p NAME VALUE` pairs of a papermill line, typed as papermill types them"
    argv = shlex.split(line)
    return {argv[i+1]: _resolve_type(argv[i+2]) for i, a in enumerate(argv) if a == '-p'}


def parameters_cell_names()->set:
    nb = json.loads((ROOT/'nbs'/'04_train.ipynb').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    return {m[1] for m in re.finditer(r'^(\w+)\s*=', ''.join(cell['source']), re.M)}


def test_papermill_line_is_the_cli_run(monkeypatch):
    cfg = cli_config(readme_line('segthor-train '), monkeypatch)
    params = papermill_params(readme_line('papermill nbs/04_train.ipynb'))
    assert set(params) <= parameters_cell_names()          # papermill would add unknown names without a word
    nb = papermill_config(params.pop('defaults', 'ci'), params.pop('extra', None), **params)
    assert dataclasses.asdict(nb) == dataclasses.asdict(cfg)
    assert (cfg.lr, cfg.loss, cfg.batch_size, cfg.gpu) == (5e-4, None, None, True)   # the study's defaults, not CI's


def test_ci_defaults_differ_from_the_cli():
    "Without `-p defaults cli` the notebook runs its own small experiment: the test above would notice"
    assert papermill_config('ci', dataset='SEGTHOR').lr != TrainConfig().lr
