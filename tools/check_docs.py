#!/usr/bin/env python
"""Check the built docs site in headless Chromium: every page loads, links resolve, figures show.

    python tools/check_docs.py [--site _site] [--nbs nbs] [--shots _site_shots]

The site is served over http.server on a free port (as GitHub Pages serves it: plain files, so a link that works
here works there and from file://). Chromium is driven through selenium + the system chromedriver (Debian
packages chromium, chromium-driver; `Service(executable_path=...)` so selenium-manager downloads nothing). Selenium
rather than `chromium --headless --dump-dom`: the checks need the live page -- console errors, each image's
`naturalWidth` after decoding, the resolved `href` of every link -- which a DOM dump cannot give.

For index.html and every page (one per notebook/.qmd/.md page of `--nbs`, so new notebooks are checked without
listing them): loads with a title and no console errors (JS exceptions, failed resources); every internal `<a href>`
answers 200 and its `#anchor` exists on the target page; no root-absolute links (they break under the Pages
prefix /<repo>/); every `<img>` decodes (naturalWidth > 0); a notebook with saved figure outputs shows at least
one image. A full-page screenshot per page goes to `--shots`. Prints a table; exits 1 with one line per problem.
"""
import argparse, base64, functools, http.server, json, os, re, shutil, sys, threading, time, urllib.error, urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit, unquote

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs import source_files, is_page   # one rule for what a page is

TILE_PX = 6000   # a taller page is saved as several screenshots (page-1.png, page-2.png, ...) that together cover it


def expected_pages(nbs:Path)->dict:
    "{page html path: number of figures its source notebook saved} for every page of `nbs` (.qmd/.md: 0)"
    out = {}
    for rel in source_files(nbs):
        if not is_page(rel): continue
        n = 0
        if rel.suffix == '.ipynb':
            for c in json.loads((nbs/rel).read_text()).get('cells', []):
                if c['cell_type'] == 'code' and not re.search(r'(?m)^#\|\s*(hide|include:\s*false|output:\s*false)', ''.join(c['source'])):
                    n += sum(any(k.startswith('image/') for k in o.get('data', {})) for o in c.get('outputs', []))
        out[rel.with_suffix('.html').as_posix()] = n
    return out


class _Ids(HTMLParser):
    "Collect every id/name attribute of a page (the targets of #anchors)"
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ('id', 'name') and v: self.ids.add(v)


@functools.cache
def fetch(url:str)->tuple:
    "(HTTP status, set of ids on the page) for `url`; status 0 when it does not answer"
    try:
        with urllib.request.urlopen(url, timeout=10) as r: status, body = r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, frozenset()
    except Exception: return 0, frozenset()
    p = _Ids()
    if body[:1000].lower().lstrip().startswith((b'<!doctype html', b'<html')): p.feed(body.decode('utf-8', 'replace'))
    return status, frozenset(p.ids)


def serve(site:Path)->tuple:
    "Serve `site` on a free localhost port in a thread; (server, base url)"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/"


def chromium_paths()->tuple:
    "(chromium, chromedriver) executables, or None for a missing one"
    browser = next((shutil.which(b) for b in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(b)), None)
    gh = os.environ.get('CHROMEWEBDRIVER')                    # GitHub's Ubuntu runners: Chrome + a driver off the PATH
    return browser, shutil.which('chromedriver') or (gh and shutil.which('chromedriver', path=gh))


def start_browser(width:int=1280, height:int=900):
    "A headless Chromium under selenium, with console logging on"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = chromium_paths()
    if not (browser and driver): raise RuntimeError("chromium/chromedriver not found: apt-get install -y chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--hide-scrollbars',
              f'--window-size={width},{height}', '--force-device-scale-factor=1'): opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


_IMAGES_JS = """const done = arguments[arguments.length-1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.decode().catch(() => null))).then(() => done(imgs.map(i =>
  [(i.getAttribute('src')||'').slice(0, 60), i.naturalWidth, !!i.closest('.cell-output, .cell-output-display, main, #quarto-document-content')])));"""
_LINKS_JS = "return Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]);"


def screenshot(driver, dest:Path)->str:
    "Full-page PNG(s) of the current page: `dest`, or dest-1.png, dest-2.png... of TILE_PX each; 'WxH (n files)'"
    m = driver.execute_cdp_cmd('Page.getLayoutMetrics', {})
    w, h = (int(m['cssContentSize'][k]) for k in ('width', 'height'))
    for old in dest.parent.glob(f"{dest.stem}*.png"):
        if re.fullmatch(rf"{re.escape(dest.stem)}(-\d+)?", old.stem): old.unlink()
    tops = range(0, h, TILE_PX)
    for i, y in enumerate(tops, 1):
        shot = driver.execute_cdp_cmd('Page.captureScreenshot', {'format': 'png', 'captureBeyondViewport': True,
                                      'clip': {'x': 0, 'y': y, 'width': w, 'height': min(TILE_PX, h-y), 'scale': 1}})
        (dest if len(tops) == 1 else dest.with_name(f"{dest.stem}-{i}.png")).write_bytes(base64.b64decode(shot['data']))
    return f"{w}x{h}" + (f" ({len(tops)} files)" if len(tops) > 1 else '')


def check_page(driver, base:str, page:str, n_figs:int, shots:Path)->tuple:
    "Load one page and check it; (table row, problems)"
    probs, url = [], base + page
    driver.get_log('browser')                                 # drop what earlier pages logged
    t0 = time.time(); driver.get(url)
    for _ in range(100):
        if driver.execute_script('return document.readyState') == 'complete': break
        time.sleep(0.05)
    ms = int((time.time() - t0)*1000)
    status, _ = fetch(url)
    if status != 200: probs.append(f"{page}: HTTP {status}")
    if not driver.execute_script("const h = document.querySelector('h1'); return h ? h.textContent.trim() : ''"):
        probs.append(f"{page}: no title (<h1>) shown: blank or broken page")
    imgs = driver.execute_async_script(_IMAGES_JS)
    links = driver.execute_script(_LINKS_JS)
    time.sleep(0.2)
    for r in driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name);"):
        if not r.startswith(base): probs.append(f"{page}: needs the network: {r[:200]}")
    n_ext = 0
    for e in driver.get_log('browser'):
        if e.get('level') != 'SEVERE': continue
        msg = ' '.join(e['message'].split())
        if msg.startswith(base + 'favicon.ico '): continue       # Chromium asks for it unasked; the pages declare none
        if not msg.startswith(base) and 'Failed to load resource: net::ERR_' in msg:
            n_ext += 1                                            # the site must not need the network (math, fonts)
            probs.append(f"{page}: needs the network: {msg[:200]}"); continue
        probs.append(f"{page}: console error: {msg[:300]}")
    n_int = 0
    for raw, absolute in links:
        if raw.startswith(('javascript:', 'mailto:', 'data:')): continue
        if raw.startswith('/') and not raw.startswith('//'):
            probs.append(f"{page}: root-absolute link {raw!r} (breaks under the Pages prefix /<repo>/; make it relative)")
        if not absolute.startswith(base): continue
        n_int += 1
        target, frag = urldefrag(absolute)
        st, ids = fetch(target)
        if st != 200: probs.append(f"{page}: broken link {raw!r} -> HTTP {st or 'no answer'}"); continue
        if frag and unquote(frag) not in ids and urlsplit(target).path.endswith(('.html', '/')):
            probs.append(f"{page}: broken link {raw!r}: no id {unquote(frag)!r} on {urlsplit(target).path.lstrip('/') or 'index'}")
    broken = [src for src, w, _ in imgs if not w]
    for src in broken: probs.append(f"{page}: image does not load: {src!r}")
    figs = sum(1 for _, w, inside in imgs if w and inside)
    if n_figs and not figs: probs.append(f"{page}: the notebook saved {n_figs} figure(s) but the page shows none")
    shot = shots/(page.replace('/', '__').removesuffix('.html') + '.png')
    size = screenshot(driver, shot)
    return (page, ms, n_int, len(imgs), figs, n_figs, n_ext, len(probs), size), probs


def check_search(driver, base:str, query:str, shots:Path)->tuple:
    "Type `query` into the search box of the home page, follow the first hit; (hits shown, problems)"
    from selenium.webdriver.common.by import By
    driver.get(base + 'index.html')
    box = driver.find_element(By.CSS_SELECTOR, '.smalldocs-search input')
    box.click(); box.send_keys(query)
    hits = []
    for _ in range(100):                                       # search.json is fetched on first use
        hits = driver.execute_script("return Array.from(document.querySelectorAll('.smalldocs-search .search-result'))"
                                     ".map(a => [a.getAttribute('href'), a.textContent.trim()]);")
        if hits: break
        time.sleep(0.05)
    screenshot(driver, shots/'search.png')
    if not hits: return 0, [f"search box: no result for {query!r}"]
    driver.get(urljoin(base, hits[0][0]))
    target, frag = urldefrag(driver.current_url)
    st, ids = fetch(target)
    if st != 200: return len(hits), [f"search box: first hit for {query!r} {hits[0][0]!r} -> HTTP {st}"]
    if frag and unquote(frag) not in ids: return len(hits), [f"search box: first hit {hits[0][0]!r} has no #{frag} on its page"]
    if query.lower() not in driver.execute_script('return document.body.innerText').lower():
        return len(hits), [f"search box: the page of the first hit for {query!r} does not contain it"]
    return len(hits), []


def check_site(site:Path, nbs:Path, shots:Path, quiet:bool=False, query:str='Hausdorff')->list:
    "Check every page of `site` against the pages of `nbs`; the problems found, one line each"
    site, shots = Path(site), Path(shots)
    if not (site/'index.html').exists(): return [f"{site}: no index.html (build the site first: python tools/docs.py)"]
    want = expected_pages(Path(nbs))
    probs = [f"{site}: no page {p} for {Path(nbs)/Path(p).with_suffix('')}.*" for p in want if not (site/p).exists()]
    pages = ['index.html'] + sorted(p for p in want if p != 'index.html' and (site/p).exists())
    shots.mkdir(parents=True, exist_ok=True)
    srv, base = serve(site)
    fetch.cache_clear()
    driver, rows = start_browser(), []
    try:
        for p in pages:
            row, pr = check_page(driver, base, p, want.get(p, 0), shots)
            rows.append(row); probs += pr
        n_hits, pr = check_search(driver, base, query, shots); probs += pr
    finally:
        driver.quit(); srv.shutdown()
    if not quiet:
        hdr = ('page', 'load ms', 'int links', 'imgs', 'figures', 'nb figs', 'ext offline', 'problems', 'screenshot')
        w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
        for r in [hdr] + rows: print('  '.join(str(v).ljust(w[i]) for i, v in enumerate(r)))
        print(f"search box: {n_hits} result(s) for {query!r}")
        print(f"{len(rows)} page(s) checked in Chromium, {len(probs)} problem(s); screenshots in {shots}")
    return probs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--site', default=root/'_site', type=Path, help='the built site (python tools/docs.py)')
    p.add_argument('--nbs', default=root/'nbs', type=Path, help='the notebooks the site was built from')
    p.add_argument('--shots', default=root/'_site_shots', type=Path, help='where the full-page screenshots go')
    p.add_argument('--query', default='Hausdorff', help='a word the search box must find')
    a = p.parse_args(argv)
    try: probs = check_site(a.site, a.nbs, a.shots, query=a.query)
    except Exception as e: probs = [f"docs check failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"]
    for l in probs: print(l, file=sys.stderr)
    return 1 if probs else 0


if __name__ == '__main__': sys.exit(main())
