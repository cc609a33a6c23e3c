#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which these machines cannot install).

Markdown cells are copied; code cells (not `#| hide`) become python blocks with their text output.
`--check` exits 1 if README.md is out of date instead of writing it.
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
_directive = re.compile(r'^\s*#\|\s*(.*)$')

def _directives(src:str)->set:
    return {m.group(1).strip() for l in src.splitlines() if (m := _directive.match(l))}

def _text_outputs(cell)->str:
    out = []
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': out.append(''.join(o['text']))
        elif 'text/plain' in o.get('data', {}) and not any(k.startswith('image/') for k in o['data']):
            out.append(''.join(o['data']['text/plain']))
    return ''.join(out).rstrip()

def render(nb_path:Path)->str:
    nb = json.loads(nb_path.read_text())
    parts = ['<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->']
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(src.strip())
        elif c['cell_type'] == 'code':
            d = _directives(src)
            if d & {'hide', 'export', 'exporti', 'exports'} or any(x.startswith(('default_exp', 'hide')) for x in d): continue
            code = '\n'.join(l for l in src.splitlines() if not _directive.match(l)).strip()
            if code: parts.append(f'```python\n{code}\n```')
            out = _text_outputs(c)
            if out: parts.append(f'```\n{out}\n```')
    return '\n\n'.join(parts) + '\n'

def main():
    text, readme = render(root/'nbs'/'index.ipynb'), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`')
        return print('README.md is in sync with nbs/index.ipynb')
    readme.write_text(text)
    print(f'wrote {readme}')

if __name__ == '__main__': main()
