//! A tiny protobuf writer that emits valid ONNX models (IR 8, opset 13) for tests: an image
//! input pooled per channel (ReduceMean), a MatMul with a weight initializer and an Add with a
//! bias, so a test controls exactly what the model outputs. No Python, no files from outside.

/// Appends a varint.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

/// A tensor dimension: fixed or named (dynamic).
#[derive(Clone, Copy)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// ValueInfoProto of a float tensor.
fn value_info(name: &str, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Fixed(v) => int(&mut dim, 1, *v),
            Dim::Named(n) => string(&mut dim, 2, n),
        }
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    int(&mut tensor, 1, 1); // elem_type FLOAT
    bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    string(&mut vi, 1, name);
    bytes(&mut vi, 2, &ty);
    vi
}

/// TensorProto of floats (raw little-endian data).
fn initializer(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        int(&mut t, 1, *d);
    }
    int(&mut t, 2, 1); // FLOAT
    string(&mut t, 8, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes(&mut t, 9, &raw);
    t
}

/// NodeProto; `ints` are INTS attributes, `int_attrs` INT attributes.
fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    ints: &[(&str, &[i64])],
    int_attrs: &[(&str, i64)],
) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        string(&mut n, 1, i);
    }
    string(&mut n, 2, output);
    string(&mut n, 3, &format!("{op}_{output}"));
    string(&mut n, 4, op);
    for (name, values) in ints {
        let mut a = Vec::new();
        string(&mut a, 1, name);
        for v in *values {
            int(&mut a, 8, *v);
        }
        int(&mut a, 20, 7); // INTS
        bytes(&mut n, 5, &a);
    }
    for (name, v) in int_attrs {
        let mut a = Vec::new();
        string(&mut a, 1, name);
        int(&mut a, 3, *v);
        int(&mut a, 20, 2); // INT
        bytes(&mut n, 5, &a);
    }
    n
}

/// A model `output[N, K] = mean over H, W of input (per channel) · weights[C, K] + bias[K]`.
/// `channels_last` picks the input layout: [N, H, W, C] or [N, C, H, W] (H = W = `size`).
pub fn pooled_linear(
    size: i64,
    channels: i64,
    channels_last: bool,
    weights: &[f32],
    bias: &[f32],
) -> Vec<u8> {
    let k = bias.len() as i64;
    assert_eq!(weights.len() as i64, channels * k, "weights are [C, K]");
    let (input_dims, axes) = if channels_last {
        (
            [
                Dim::Named("N"),
                Dim::Fixed(size),
                Dim::Fixed(size),
                Dim::Fixed(channels),
            ],
            [1i64, 2],
        )
    } else {
        (
            [
                Dim::Named("N"),
                Dim::Fixed(channels),
                Dim::Fixed(size),
                Dim::Fixed(size),
            ],
            [2i64, 3],
        )
    };
    let mut graph = Vec::new();
    bytes(
        &mut graph,
        1,
        &node(
            "ReduceMean",
            &["input"],
            "pooled",
            &[("axes", &axes)],
            &[("keepdims", 0)],
        ),
    );
    bytes(
        &mut graph,
        1,
        &node("MatMul", &["pooled", "W"], "projected", &[], &[]),
    );
    bytes(
        &mut graph,
        1,
        &node("Add", &["projected", "B"], "output", &[], &[]),
    );
    string(&mut graph, 2, "affectstream_test");
    bytes(&mut graph, 5, &initializer("W", &[channels, k], weights));
    bytes(&mut graph, 5, &initializer("B", &[k], bias));
    bytes(&mut graph, 11, &value_info("input", &input_dims));
    bytes(
        &mut graph,
        12,
        &value_info("output", &[Dim::Named("N"), Dim::Fixed(k)]),
    );
    let mut model = Vec::new();
    int(&mut model, 1, 8); // ir_version
    string(&mut model, 2, "affectstream-tests");
    bytes(&mut model, 7, &graph);
    let mut opset = Vec::new();
    string(&mut opset, 1, "");
    int(&mut opset, 2, 13);
    bytes(&mut model, 8, &opset);
    model
}
