#!/usr/bin/env python3
"""Accept a converted ONNX file by its outputs: run it on the manifest's reference inputs and
compare with the reference outputs (shape, the first values, the sum).

    python check_reference.py MODEL.onnx REFERENCE.json

REFERENCE.json is the `[models.<role>.reference]` table of models.toml as JSON:
  inputs.<name>  = {formula, shape, dtype}: the value at flat row-major index i is `formula`
                   evaluated in float64 (numpy: sin, cos, exp, ...) then cast to dtype;
  outputs.<name> = {shape, first8, sum};
  atol (first values, default 1e-4), rtol (sum, default 1e-4).
Runs with the project's .venv (numpy, onnxruntime). Prints one line; exit 0 when it matches,
1 with the first difference otherwise.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

DTYPES = {'f32': np.float32, 'f64': np.float64, 'i64': np.int64, 'i32': np.int32}
FUNCS = {name: getattr(np, name) for name in ('sin', 'cos', 'exp', 'log', 'sqrt', 'abs', 'tanh')}


def make_input(spec):
    shape = tuple(spec['shape'])
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.float64)
    value = eval(spec['formula'], {'__builtins__': {}}, dict(FUNCS, i=i))  # manifest text
    value = np.broadcast_to(np.asarray(value, np.float64), i.shape)
    return value.astype(DTYPES[spec.get('dtype', 'f32')]).reshape(shape)


def check(model, ref):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=['CPUExecutionProvider'])
    feeds = {name: make_input(spec) for name, spec in ref['inputs'].items()}
    names = list(ref['outputs'])
    got = dict(zip(names, sess.run(names, feeds)))
    atol, rtol = ref.get('atol', 1e-4), ref.get('rtol', 1e-4)
    worst = 0.0
    for name, want in ref['outputs'].items():
        y = got[name]
        if list(y.shape) != list(want['shape']):
            return f'output {name}: shape {list(y.shape)}, reference {want["shape"]}'
        first = y.ravel()[:len(want['first8'])].astype(np.float64)
        diff = float(np.abs(first - np.asarray(want['first8'])).max())
        worst = max(worst, diff)
        if diff > atol:
            return f'output {name}: first values differ by {diff:.3g} (> {atol:g})'
        total = float(y.astype(np.float64).sum())
        if abs(total - want['sum']) > rtol * max(1.0, abs(want['sum'])):
            return f'output {name}: sum {total:.6g}, reference {want["sum"]:.6g}'
    return None, worst


def main():
    model, ref_path = sys.argv[1:3]
    with open(ref_path) as f:
        ref = json.load(f)
    result = check(model, ref)
    if isinstance(result, str):
        print(result)
        sys.exit(1)
    print(f'reference outputs match (max abs diff {result[1]:.2g}, onnxruntime {ort.__version__})')


if __name__ == '__main__':
    main()
