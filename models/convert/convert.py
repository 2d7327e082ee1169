#!/usr/bin/env python3
"""Turn a model's registry source into the ONNX file the program loads.

Runs inside the conversion environment that models/fetch.py builds from requirements*.txt
(TensorFlow-CPU 2.15.1, tf2onnx 1.16.1, tensorflowjs 4.17.0 and tfjs-graph-converter 1.6.3
without their dependencies). Usage:

    python convert.py KIND OUT.onnx SRC [SRC ...] [--input NAME] [--output NAME] [--meta K=V]

KIND:
  keras               SRC = a Keras .h5/.hdf5 file (model + weights).
  tfjs_graph          SRC = a TFJS graph model's model.json (its .bin beside it).
  faceapi_expression  SRC = face-api's face_expression_model-weights_manifest.json (its .bin
                      beside it); the network is rebuilt here from face-api's definition
                      (FaceFeatureExtractor: four dense blocks, average pool, FC, softmax).

Every kind ends the same way: one input named --input with a named batch dimension, one output
named --output, opset 13, no unused opset imports, the --meta pairs as metadata. Conversion is
not byte-reproducible; fetch.py accepts the result by its outputs on reference inputs.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

OPSET = 13


def stub_tfjs_imports(where):
    """tensorflowjs imports these at module load; the graph-model path never calls them."""
    for pkg in ('tensorflow_decision_forests', 'tensorflow_hub', 'jax', 'jax/experimental'):
        os.makedirs(os.path.join(where, pkg), exist_ok=True)
        init = os.path.join(where, pkg, '__init__.py')
        if not os.path.exists(init):
            with open(init, 'w') as f:
                f.write('jax2tf = None\n' if pkg == 'jax/experimental' else '')
    sys.path.insert(0, where)
    return where


def keras_to_onnx(src, tmp):
    import tensorflow as tf
    import tf2onnx
    model = tf.keras.models.load_model(src, compile=False)
    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name='input'),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return proto


def add_fused_op_args(model_json, out_json):
    """TFJS graph JSON omits the `num_args`/`TArgs` attributes of its _Fused* ops, which
    TensorFlow's op registry requires to rebuild a GraphDef: derive them from the inputs."""
    with open(model_json) as f:
        j = json.load(f)
    for node in j['modelTopology']['node']:
        if node['op'] in ('_FusedConv2D', '_FusedMatMul', '_FusedDepthwiseConv2dNative'):
            extra = [i for i in node['input'] if not i.startswith('^')][2:]
            attr = node.setdefault('attr', {})
            attr.setdefault('num_args', {'i': str(len(extra))})
            attr.setdefault('TArgs', {'list': {'type': ['DT_FLOAT'] * len(extra)}})
    with open(out_json, 'w') as f:
        json.dump(j, f)


def tfjs_graph_to_onnx(src, tmp):
    import onnx
    env = dict(os.environ, PYTHONPATH=stub_tfjs_imports(os.path.join(tmp, 'stubs')))
    patched = os.path.join(os.path.dirname(os.path.abspath(src)), '.patched-model.json')
    add_fused_op_args(src, patched)
    try:
        saved = os.path.join(tmp, 'saved_model')
        from tfjs_graph_converter import api  # after the stubs are on sys.path
        api.graph_model_to_saved_model(patched, saved, ['serve'])
    finally:
        os.remove(patched)
    raw = os.path.join(tmp, 'raw.onnx')
    subprocess.run([sys.executable, '-m', 'tf2onnx.convert', '--saved-model', saved,
                    '--opset', str(OPSET), '--output', raw], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return onnx.load(raw)


def read_tfjs_weights(manifest_json):
    """Weights of a TFJS weights manifest as float32 numpy arrays (uint8 quantization undone)."""
    import numpy as np
    with open(manifest_json) as f:
        groups = json.load(f)
    weights = {}
    for group in groups:
        data = b''
        for p in group['paths']:
            with open(os.path.join(os.path.dirname(manifest_json), p), 'rb') as f:
                data += f.read()
        at = 0
        for w in group['weights']:
            n = math.prod(w['shape'])
            q = w.get('quantization')
            if q:
                if q['dtype'] != 'uint8':
                    raise ValueError(f"{w['name']}: quantization {q['dtype']} not handled")
                a = np.frombuffer(data, np.uint8, n, at).astype(np.float32)
                a = a * np.float32(q['scale']) + np.float32(q['min'])
                at += n
            else:
                if w['dtype'] != 'float32':
                    raise ValueError(f"{w['name']}: dtype {w['dtype']} not handled")
                a = np.frombuffer(data, np.float32, n, at).copy()
                at += 4 * n
            weights[w['name']] = a.reshape(w['shape'])
        if at != len(data):
            raise ValueError(f'{manifest_json}: {len(data) - at} bytes left after the weights')
    return weights


def faceapi_expression_to_onnx(src, tmp):
    """face-api's FaceExpressionNet: input [N,112,112,3] RGB 0..255; the graph subtracts
    face-api's mean (122.782, 117.001, 104.298) and divides by 255 as forwardInput does."""
    import numpy as np
    import tensorflow as tf
    import tf2onnx
    w = read_tfjs_weights(src)
    mean = np.array([122.782, 117.001, 104.298], np.float32)

    def separable(x, name, stride):
        y = tf.nn.separable_conv2d(x, w[f'{name}/depthwise_filter'], w[f'{name}/pointwise_filter'],
                                   [1, stride, stride, 1], 'SAME')
        return y + w[f'{name}/bias']

    def dense_block(x, name, first):
        if first:
            a = tf.nn.conv2d(x, w[f'{name}/conv0/filters'], 2, 'SAME') + w[f'{name}/conv0/bias']
        else:
            a = separable(x, f'{name}/conv0', 2)
        a = tf.nn.relu(a)
        b = separable(a, f'{name}/conv1', 1)
        c = separable(tf.nn.relu(a + b), f'{name}/conv2', 1)
        d = separable(tf.nn.relu(a + (b + c)), f'{name}/conv3', 1)
        return tf.nn.relu(a + (b + (c + d)))

    @tf.function(input_signature=[tf.TensorSpec([None, 112, 112, 3], tf.float32, name='input')])
    def net(x):
        h = (x - mean) / np.float32(255.0)
        for i in range(4):
            h = dense_block(h, f'dense{i}', i == 0)
        h = tf.reshape(tf.nn.avg_pool2d(h, 7, 2, 'VALID'), [-1, w['fc/weights'].shape[0]])
        return tf.nn.softmax(tf.matmul(h, w['fc/weights']) + w['fc/bias'])

    proto, _ = tf2onnx.convert.from_function(net, input_signature=net.input_signature,
                                             opset=OPSET)
    return proto


def finish(model, input_name, output_name, meta):
    """One named input and output, a named batch dimension, only the opsets in use."""
    import onnx
    g = model.graph
    renames = {g.input[0].name: input_name, g.output[0].name: output_name}
    for node in g.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
        node.output[:] = [renames.get(x, x) for x in node.output]
    g.input[0].name, g.output[0].name = input_name, output_name
    for v in (g.input[0], g.output[0]):
        dim = v.type.tensor_type.shape.dim[0]
        dim.ClearField('dim_value')
        dim.dim_param = 'batch'
    used = {n.domain for n in g.node} | {''}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == 'ai.onnx']
    del model.opset_import[:]
    model.opset_import.extend(keep)
    del model.metadata_props[:]
    for k, v in meta:
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    return model


KINDS = {'keras': keras_to_onnx, 'tfjs_graph': tfjs_graph_to_onnx,
         'faceapi_expression': faceapi_expression_to_onnx}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('kind', choices=sorted(KINDS))
    ap.add_argument('out')
    ap.add_argument('src')
    ap.add_argument('--input', default='input')
    ap.add_argument('--output', default='predictions')
    ap.add_argument('--meta', action='append', default=[], help='KEY=VALUE metadata')
    args = ap.parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        model = KINDS[args.kind](args.src, tmp)
        meta = [tuple(m.split('=', 1)) for m in args.meta]
        model = finish(model, args.input, args.output, meta)
        part = args.out + '.part'
        onnx.save(model, part)
        os.replace(part, args.out)


if __name__ == '__main__':
    main()
