#!/usr/bin/env python
"""Build the docs site offline: nbdev's notebook processors, then smalldocs (no Quarto).

    python tools/docs.py [--dest _site] [--proc _proc] [--workers 2] [--strict]

Why not `nbdev-docs`: it shells out to Quarto, which cannot be installed on these machines (and `nbdev-proc-nbs`
alone tries to `sudo` install it). smalldocs (PyPI, pure Python) reads the same `_quarto.yml`/`nbdev.yml` and
renders the processed notebooks -- markdown, code, saved outputs with their figures, and the `show_doc` API
reference with docments -- into a static site with relative links (works from file:// and on GitHub Pages).

Steps: (1) every page of nbs/ (notebooks, .qmd/.md) goes through nbdev's own processors (`FilterDefaults`:
show_doc cells added and executed, export/hide directives applied) into `--proc`; the other files of nbs/ are
copied; (2) a sidebar of the pages only (nbdev's generated one also lists styles.css, nbdev.yml, ...);
(3) smalldocs renders `--proc` into `--dest`. Notebooks are processed in parallel processes; a notebook that fails
is named on one line and the build exits 1 (no half site is left looking complete).
"""
import argparse, ast, importlib, multiprocessing, os, re, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from html import unescape

root = Path(__file__).resolve().parents[1]
if str(Path(__file__).parent) not in sys.path: sys.path.insert(0, str(Path(__file__).parent))
SKIP = ('_proc', '_docs', '_site', '.ipynb_checkpoints', '__pycache__')
PAGE_SUFFIXES = ('.ipynb', '.qmd', '.md')
_EXPORTS = {'export', 'exports', 'exporti', 'exec_doc'}
MARK = '.docs_proc'   # marks a --proc folder this tool may empty


def _skip(rel:Path)->bool:
    "nbdev's rule: no hidden or underscore folders, no output folders"
    return any(p.startswith('.') or p in SKIP for p in rel.parts) or any(p.startswith('_') for p in rel.parts[:-1])


def source_files(nbs:Path)->list:
    "Every file of `nbs` that belongs to the site, relative to `nbs`"
    return sorted(p.relative_to(nbs) for p in nbs.rglob('*') if p.is_file() and not _skip(p.relative_to(nbs)))


def is_page(rel:Path)->bool:
    "A page: a notebook, .qmd or .md not starting with `_` or `.` (nbdev's rule for sidebar entries)"
    return rel.suffix in PAGE_SUFFIXES and not rel.name.startswith(('_', '.'))


def _order(rel:Path):
    "index first, then nbdev's numeric prefix order"
    return (rel.parent.parts, rel.stem != 'index', rel.as_posix())


def write_sidebar(pages:list, proc:Path)->Path:
    "sidebar.yml listing only the pages, index first"
    import yaml
    contents = [p.as_posix() for p in sorted(pages, key=_order)]
    dest = proc/'sidebar.yml'
    dest.write_text(yaml.safe_dump({'website': {'sidebar': {'contents': contents}}}, sort_keys=False))
    return dest


def drop_quarto_only(yml:Path):
    "Remove `format-links` (Quarto's other-format links; nbdev writes it, smalldocs has no other formats) from `yml`"
    import yaml
    if not yml.exists(): return
    d = yaml.safe_load(yml.read_text()) or {}
    if d.pop('format-links', None) is not None: yml.write_text(yaml.safe_dump(d, sort_keys=False))


def _imports_only(src:str)->str|None:
    "The top-level import statements of a cell that mixes imports with other code, else None"
    try: trees = ast.parse(src).body
    except SyntaxError: return None
    imps = [t for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))]
    if not imps or len(imps) == len(trees): return None
    return '\n'.join(ast.get_source_segment(src, t) for t in imps)


class _Shown:
    "A default shown by its repr on one line (a numpy array, which fastcore cannot compare with `!= empty`)"
    def __init__(self, o): self.r = ' '.join(repr(o).split())
    def __repr__(self): return self.r


def _patch_fastcore():
    "fastcore's docments raise on an ndarray default (`default != empty`): show such a default by its repr instead"
    from fastcore import docments as D
    orig = D.DocmentText._fmt_param
    if getattr(orig, '_patched', False): return
    def _fmt_param(self, nm, p):
        try: return orig(self, nm, p)
        except ValueError: return orig(self, nm, {**p, 'default': _Shown(p.get('default'))})
    _fmt_param._patched = True
    D.DocmentText._fmt_param = _fmt_param


def _procs(problems:list):
    "nbdev's docs processors; a cell of imports + code that fails out of context runs its imports; an empty API entry is a problem"
    from nbdev import processors as P

    class exec_show_docs(P.exec_show_docs):
        def __call__(self, cell):
            imps = _imports_only(cell.source) if cell.cell_type == 'code' else None
            if imps is not None and hasattr(self, 'k') and self.nb.has_docs_ and not (cell.directives_.keys() & _EXPORTS):
                saved = cell.get('outputs')
                try: return super().__call__(cell)          # nbdev runs a cell that imports, all of it
                except Exception as e: err = ' '.join(str(e).split()[-12:])
                self.k.run(imps)                               # out of context it failed: its imports are what docs need
                if (e := self.k.exc): raise Exception(f"cell {cell.idx_}: {type(e).__name__}: {e}") from e
                cell.outputs = saved
                problems.append(f"warning: cell {cell.idx_} mixes imports with code that fails out of context ({err}): "
                                "ran its imports only (nbdev FAQ: put imports in their own cell)")
                return
            res = super().__call__(cell)
            if hasattr(self, 'k') and P._is_showdoc(cell) and not any('text/markdown' in o.get('data', {}) for o in cell.get('outputs', [])):
                call = next((l for l in cell.source.splitlines() if l.startswith('show_doc')), cell.source)
                try: why = eval(f"{call}._repr_markdown_()", self.k.user_ns) and 'empty'
                except Exception as e: why = f"{type(e).__name__}: {e}"
                problems.append(f"{call} rendered nothing ({' '.join(str(why).split())[:200]})")
            return res

    class Defaults(P.FilterDefaults):
        def base_procs(self): return [exec_show_docs if p is P.exec_show_docs else p for p in super().base_procs()]
    return Defaults


def page_links(nbs:Path, pages:list, doc_url:str)->dict:
    "{nbdev's absolute doc URL of a page (`doc_url`/data_fix.html): the page's source, relative to `nbs`}"
    from nbdev.doclinks import nbpath2html
    return {f"{doc_url}/{nbpath2html(p).as_posix()}": p.as_posix() for p in pages if p.suffix == '.ipynb'}


def localise(text:str, links:dict, here:Path)->str:
    "Point nbdev's absolute doc links at the pages of this site, relative to the page `here` (smalldocs checks them)"
    def sub(m):
        target = links.get(m.group(1))
        return m.group(0) if target is None else os.path.relpath(target, here.parent.as_posix() or '.') + (m.group(2) or '')
    return _doc_link.sub(sub, text) if links else text

_doc_link = re.compile(r'(https?://[^\s()"\'<>#]+?\.html)(#[^\s()"\'<>]*)?(?=[\s)"\'<>]|$)')


def _fix_nb(nb, links:dict, here:Path):
    "Localise doc links in cells and markdown outputs; drop nbdev's `output-file` (smalldocs names pages after the notebook)"
    for c in nb.cells:
        c.source = localise(c.source, links, here)
        if c.cell_type == 'raw' and c.source.startswith('---'):
            c.source = re.sub(r'(?m)^output-file: .*\n', '', c.source)
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md is not None:
                o['data']['text/markdown'] = localise(md if isinstance(md, str) else ''.join(md), links, here)


def write_redirects(dest:Path, links:dict, doc_url:str):
    "At nbdev's page names (data_fix.html, what _modidx and other projects link to) a redirect to our page, #anchor kept"
    for url, src in links.items():
        old, new = dest/url.removeprefix(doc_url.rstrip('/') + '/'), Path(src).with_suffix('.html')
        if old.exists() or not (dest/new).exists(): continue
        to = os.path.relpath(new.as_posix(), old.parent.relative_to(dest).as_posix() or '.')
        old.write_text(f'<!doctype html><meta charset="utf-8"><title>{to}</title><meta http-equiv="refresh" content="0; url={to}">'
                       f'<script>location.replace("{to}" + location.hash)</script><a href="{to}">{to}</a>\n')


def process_page(src:Path, dst:Path, links:dict={}, here:Path=Path('.'))->list:
    "Run nbdev's docs processors on one notebook (in a worker process); its problems, one line each"
    from fastcore.nbio import read_nb, write_nb
    os.environ['IN_TEST'] = '1'                 # as nbdev's serve_drv: exported code must not re-export or run CLIs
    os.environ.setdefault('MPLBACKEND', 'Agg')
    import warnings
    warnings.filterwarnings('ignore', message='Found cells containing imports')   # reported below when it matters
    _patch_fastcore()
    problems = []
    try:
        nb = read_nb(src)
        _procs(problems)()(nb)
        _fix_nb(nb, links, here)
        write_nb(nb, dst)
    except Exception as e:
        problems.append(f"not processed: {' '.join(str(e).split())[:400]}")
    return [f"warning: {src}: {p.removeprefix('warning: ')}" if p.startswith('warning: ') else f"{src}: {p}" for p in problems]


_MATH = re.compile(r'<span class="math (inline|display)">\\[(\[](.*?)\\[)\]]</span>', re.S)
_KATEX = re.compile(r'<(?:link|script)\b[^>]*katex[^>]*>(?:</script>)?\n?')
_WEBFONT = re.compile(r'@import\s+url\(\s*["\']?https?://[^)]*\)\s*;?')

def math_to_mathml(html:str)->tuple:
    "Render the page's TeX (smalldocs' math spans) to MathML now, and drop KaTeX's CDN tags; (html, n formulas)"
    from latex2mathml.converter import convert
    n = 0
    def sub(m):
        nonlocal n; n += 1
        return convert(unescape(m[2]), display='inline' if m[1] == 'inline' else 'block')
    html = _MATH.sub(sub, html)
    return (_KATEX.sub('', html) if n or 'katex' in html else html), n

def make_offline(dest:Path)->int:
    "Every page readable without the network: math as MathML (Chromium draws it), no web-font imports; formulas rendered"
    n = 0
    for page in Path(dest).rglob('*.html'):
        html, k = math_to_mathml(page.read_text())
        if k or 'katex' in html: page.write_text(html); n += k
    for css in Path(dest).rglob('*.css'):
        text = css.read_text()
        if _WEBFONT.search(text): css.write_text(_WEBFONT.sub('', text))   # the theme's Google font: system fonts instead
    return n


def build(dest:Path, proc:Path, workers:int=2, strict:bool=False, quiet:bool=False)->list:
    "Build the site from nbs/ into `dest` via `proc`; the problems found, one line each"
    from nbdev.config import get_config
    cfg = get_config(root)
    nbs, dest, proc = Path(cfg.nbs_path), Path(dest).resolve(), Path(proc).resolve()
    if proc.exists() and any(proc.iterdir()):
        if not ((proc/MARK).exists() or proc == root/'_proc'):   # ours, or nbdev-proc-nbs's scratch folder
            return [f"{proc}: not empty and not made by tools/docs.py; give another --proc"]
        shutil.rmtree(proc)
    proc.mkdir(parents=True, exist_ok=True)
    (proc/MARK).touch()
    files = source_files(nbs)
    pages, jobs = [f for f in files if is_page(f)], []
    links = page_links(nbs, pages, f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/'))
    for f in files:
        if f.name == 'sidebar.yml': continue
        (proc/f).parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == '.ipynb': jobs.append((nbs/f, proc/f, links, f))
        else: shutil.copy2(nbs/f, proc/f)
    write_sidebar(pages, proc)
    drop_quarto_only(proc/'nbdev.yml')
    if not any(p.stem == 'index' for p in pages): return [f"{nbs}: no index.ipynb (the site's home page)"]
    os.chdir(cfg.config_path)                   # exported code runs as under nbdev-proc-nbs: cwd = the project
    t0 = time.time()
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context('spawn')) as ex:
        worker = importlib.import_module('docs').process_page     # by module name: spawned workers cannot see __main__
        lines = [l for ls in ex.map(worker, *zip(*jobs)) for l in ls]
    if not quiet: print(f"processed {len(jobs)} notebook(s) in {time.time()-t0:.1f} s", flush=True)
    for l in lines:
        if l.startswith('warning: '): print(l, file=sys.stderr)
    problems = [l for l in lines if not l.startswith('warning: ')]
    if problems: return problems
    from smalldocs.config import load
    from smalldocs.site import Site
    site = Site(load(proc), quiet=True)
    site.out = dest
    n = site.build()
    if not quiet: print(f"rendered {n} page(s) to {dest}")
    n_math = make_offline(dest)
    if not quiet: print(f"{n_math} formula(s) rendered to MathML; no web fonts or CDN scripts")
    (dest/'.nojekyll').touch()                   # GitHub Pages: serve site_libs/ etc. as they are
    write_redirects(dest, links, cfg.doc_host + cfg.doc_baseurl)
    warnings = [f"smalldocs: {w}" for w in site.warnings]
    if strict: return warnings
    for w in warnings: print(f"warning: {w}", file=sys.stderr)
    return []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dest', default=root/'_site', type=Path, help='the site folder (emptied and rewritten)')
    p.add_argument('--proc', default=root/'_proc', type=Path, help='scratch folder for the processed notebooks')
    p.add_argument('--workers', default=2, type=int, help='notebooks processed at once')
    p.add_argument('--strict', action='store_true', help="also fail on smalldocs' warnings (e.g. broken links)")
    a = p.parse_args(argv)
    try: problems = build(a.dest, a.proc, a.workers, a.strict)
    except Exception as e: problems = [f"docs build failed: {type(e).__name__}: {e}"]
    for l in problems: print(l, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__': sys.exit(main())
