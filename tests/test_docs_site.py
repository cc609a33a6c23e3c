"""The docs site: built offline from the notebooks (tools/docs.py: nbdev's processors + smalldocs, no Quarto) and
checked in headless Chromium (tools/check_docs.py): every page loads, internal links and #anchors resolve, figures
show, the API reference has every exported name; and the checker itself catches a broken site."""
import importlib, json, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import check_docs   # noqa: E402

browser, driver = check_docs.chromium_paths()
needs_chromium = pytest.mark.skipif(not (browser and driver), reason=
    "chromium/chromedriver not installed: sudo apt-get install -y chromium chromium-driver (.ci/run does this)")


def run_tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT/'tools'/name), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built from nbs/ into a temporary folder, warnings counted as failures"
    tmp = tmp_path_factory.mktemp('docs')
    r = run_tool('docs.py', '--dest', tmp/'site', '--proc', tmp/'proc', '--strict')
    assert r.returncode == 0, f"docs build failed:\n{r.stdout}\n{r.stderr}"
    return tmp/'site'


def test_every_notebook_is_a_page_with_its_api_reference(site):
    "One page per notebook; every public name of every module is documented (an anchor) on its notebook's page"
    from nbdev.doclinks import nbpath2html
    nbs = ROOT/'nbs'
    want = check_docs.expected_pages(nbs)
    assert 'index.html' in want and len(want) > 1
    assert [p for p in want if not (site/p).exists()] == []
    pages = {nbpath2html(Path(p).with_suffix('.ipynb')).as_posix(): p for p in want}   # nbdev's doc name -> our page
    ids, missing, n = {}, [], 0
    for mod, syms in importlib.import_module('segthor_nb._modidx').d['syms'].items():
        public = set(getattr(importlib.import_module(mod), '__all__', []))
        for sym, (url, _) in syms.items():
            if sym.count('.') != mod.count('.') + 1 or sym.rsplit('.', 1)[1] not in public: continue
            doc, _, anchor = url.partition('#')
            if doc not in pages: continue                     # a module whose notebook has no page here
            page = site/pages[doc]
            if page not in ids: ids[page] = set(re.findall(r'\bid="([^"]+)"', page.read_text()))
            n += 1
            if anchor not in ids[page]: missing.append(f"{sym} (#{anchor} on {page.name})")
    assert n > 20 and missing == [], missing
    # docments: a parameter's comment is in the rendered signature (the first documented parameter found)
    from fastcore.docments import docments
    from segthor_nb.data_fix import load_volume
    comment = next(v for v in docments(load_volume).values() if v)
    assert f"# {comment}".replace("'", '&#x27;') in (site/pages['data_fix.html']).read_text()


def test_links_are_relative_and_local(site):
    "nbdev's absolute doc links were pointed at this site's pages, so the site works from file:// and any prefix"
    from nbdev.config import get_config
    cfg = get_config(ROOT)
    html = ''.join(p.read_text() for p in site.glob('*.html'))
    assert f'{cfg.doc_host}{cfg.doc_baseurl}/' not in html
    assert not re.search(r'(?:href|src)="/(?!/)', html)
    from nbdev.doclinks import nbpath2html                  # nbdev's page names (data_fix.html) redirect to ours
    for page in check_docs.expected_pages(ROOT/'nbs'):
        old = site/nbpath2html(Path(page).with_suffix('.ipynb'))
        if old.name != page: assert f'location.replace("{page}" + location.hash)' in old.read_text(), old


def test_math_is_rendered_and_nothing_needs_the_network(site):
    "TeX becomes MathML at build time: no KaTeX from a CDN, no raw \\( \\) left, no web-font import in the theme"
    pages = {p.name: p.read_text() for p in site.glob('*.html')}
    with_math = [n for n, h in pages.items() if '<math ' in h]
    assert len(with_math) >= 3, with_math                              # the CRF, SAM and metrics chapters have formulas
    assert [n for n, h in pages.items() if 'katex' in h or 'class="math ' in h] == []
    assert not re.search(r'\\\(.{1,200}?\\\)', pages['02_models.html'])
    assert [c.name for c in site.rglob('*.css') if 'fonts.googleapis' in c.read_text()] == []


@needs_chromium
def test_site_in_chromium(site, tmp_path):
    "Every page in headless Chromium: no problems, figures where the notebook saved them, non-blank screenshots"
    from PIL import Image
    import numpy as np
    shots = tmp_path/'shots'
    r = run_tool('check_docs.py', '--site', site, '--shots', shots)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    want = check_docs.expected_pages(ROOT/'nbs')
    rows = {l.split()[0]: l.split() for l in r.stdout.splitlines() if l.split() and l.split()[0].endswith('.html')}
    hits = re.search(r"search box: (\d+) result", r.stdout)
    assert hits and int(hits[1]) >= 1 and (shots/'search.png').exists()
    assert set(rows) == set(want)
    for page, n_figs in want.items():
        if n_figs: assert int(rows[page][4]) >= 1, rows[page]   # the 'figures' column
        first = sorted(shots.glob(page.removesuffix('.html') + '*.png'))[0]
        px = np.asarray(Image.open(first).convert('L'), dtype=float)
        assert px.shape[1] == 1280 and px.std() > 10, (first, px.shape, px.std())   # not a blank page


@needs_chromium
def test_checker_reports_a_broken_site(site, tmp_path):
    """The checker fails, one line each, on a broken link, a missing #anchor, an image that does not load, a JS error,
    a missing notebook page, a notebook whose figures are not shown, and a page that needs the network"""
    bad = tmp_path/'site'
    shutil.copytree(site, bad)
    nbs = tmp_path/'nbs'; nbs.mkdir()
    fig = {'cell_type': 'code', 'source': 'plt.plot([1])', 'metadata': {}, 'execution_count': 1,
           'outputs': [{'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'iVBORw0KGgo='}}]}
    for name in ('index', '01_lost'):
        (nbs/f'{name}.ipynb').write_text(json.dumps({'cells': [fig], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    index = bad/'index.html'
    html = re.sub(r'<img\b[^>]*>', '', index.read_text())   # the index shows no figure ...
    html = html.replace('</main>', '<a href="nowhere.html">x</a><a href="index.html#no-such-id">y</a>'
                        '<img src="missing.png"><script>undefinedFunction()</script>'
                        '<link rel="stylesheet" href="https://cdn.invalid/x.css"></main>', 1)
    assert '</main>' in index.read_text()
    index.write_text(html)
    r = run_tool('check_docs.py', '--site', bad, '--nbs', nbs, '--shots', tmp_path/'shots')
    assert r.returncode == 1
    err = r.stderr
    for expected in ("broken link 'nowhere.html' -> HTTP 404", "no id 'no-such-id'", "image does not load: 'missing.png'",
                     'undefinedFunction', 'no page 01_lost.html', 'saved 1 figure(s) but the page shows none',
                     'needs the network: https://cdn.invalid/x.css'):
        assert expected in err, (expected, err)
