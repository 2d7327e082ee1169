//! Every ONNX model in the manifest, run through our ONNX Runtime setup on the fixed inputs of
//! ../shared/models/reference_outputs.json, matches the Python reference outputs.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;

use affectstream::encode::runtime::{DeviceRequest, Runtime};
use affectstream::manifest;
use ort::value::Tensor;

/// Evaluates the reference file's input formulas: a constant, or `[a+]b*sin(c*i)`.
fn formula(text: &str, i: usize) -> f64 {
    let t = text.replace(' ', "");
    let Some((prefix, rest)) = t.split_once("sin(") else {
        return t.parse().expect("constant formula");
    };
    let c: f64 = rest
        .trim_end_matches(')')
        .trim_end_matches("*i")
        .parse()
        .expect("sin argument");
    let prefix = prefix.trim_end_matches('*');
    let (a, b) = match prefix.rfind('+') {
        Some(p) if p > 0 => (
            prefix[..p].parse().expect("offset"),
            prefix[p + 1..].parse().expect("factor"),
        ),
        _ if prefix.is_empty() => (0.0, 1.0),
        _ => (0.0, prefix.parse().expect("factor")),
    };
    a + b * (c * i as f64).sin()
}

#[test]
fn formulas_parse() {
    assert_eq!(formula("0", 3), 0.0);
    assert_eq!(formula("16000", 0), 16000.0);
    assert!(
        (formula("127.5+127.5*sin(0.001*i)", 1000) - (127.5 + 127.5 * 1f64.sin())).abs() < 1e-12
    );
    assert!((formula("-20+10*sin(0.05*i)", 20) - (-20.0 + 10.0 * 1f64.sin())).abs() < 1e-12);
    assert!((formula("sin(0.01*i)", 100) - 1f64.sin()).abs() < 1e-12);
}

#[test]
fn every_onnx_model_matches_the_reference_outputs() {
    let refs_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/models/reference_outputs.json");
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&refs_path).expect("reference_outputs.json"))
            .expect("valid JSON");
    let m = manifest::Manifest::load(
        &manifest::default_manifest_path(),
        &manifest::default_model_dir(),
    )
    .expect("manifest");
    let runtime = Runtime::new(DeviceRequest::Cpu).expect("ONNX Runtime (run scripts/setup.sh)");
    let mut checked = 0;
    for (file, model) in refs["models"].as_object().expect("models") {
        // Models the manifest lists are checked by sha256 on the way; others come from the mirror.
        let path = m
            .models
            .iter()
            .find(|(_, e)| &e.file == file)
            .map(|(role, _)| m.verified_path(role).expect("model file verified"))
            .unwrap_or_else(|| refs_path.parent().unwrap().join(file));
        let mut session = runtime.session(&path).expect("load model");
        let mut inputs: Vec<(String, ort::value::DynValue)> = Vec::new();
        for (name, spec) in model["inputs"].as_object().unwrap() {
            let shape: Vec<usize> = spec["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let f = spec["formula (i = flat row-major index)"].as_str().unwrap();
            let n: usize = shape.iter().product();
            let value = match spec["dtype"].as_str().unwrap() {
                "f32" => Tensor::from_array((
                    shape,
                    (0..n).map(|i| formula(f, i) as f32).collect::<Vec<_>>(),
                ))
                .unwrap()
                .into_dyn(),
                "i64" => Tensor::from_array((
                    shape,
                    (0..n).map(|i| formula(f, i) as i64).collect::<Vec<_>>(),
                ))
                .unwrap()
                .into_dyn(),
                other => panic!("dtype {other}"),
            };
            inputs.push((name.clone(), value));
        }
        let outputs = session.run(inputs).expect("run");
        let mut worst: HashMap<String, f64> = HashMap::new();
        for (name, expected) in model["outputs"].as_object().unwrap() {
            let (shape, values) = outputs[name.as_str()].try_extract_tensor::<f32>().unwrap();
            let want_shape: Vec<i64> = expected["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            assert_eq!(&shape[..], &want_shape[..], "{file} {name} shape");
            for (k, want) in expected["first8"].as_array().unwrap().iter().enumerate() {
                let diff = (f64::from(values[k]) - want.as_f64().unwrap()).abs();
                assert!(
                    diff <= 1e-4,
                    "{file} {name}[{k}]: {} vs {want} (diff {diff})",
                    values[k]
                );
                let w = worst.entry(name.clone()).or_default();
                *w = w.max(diff);
            }
            let sum: f64 = values.iter().map(|v| f64::from(*v)).sum();
            let want_sum = expected["sum"].as_f64().unwrap();
            let tolerance = 1e-4 * want_sum.abs().max(1.0);
            assert!(
                (sum - want_sum).abs() <= tolerance,
                "{file} {name} sum {sum} vs {want_sum}"
            );
        }
        println!(
            "{file}: max abs diff on first8 {:?}",
            worst.values().cloned().fold(0.0, f64::max)
        );
        checked += 1;
    }
    // Every ONNX model the manifest lists has reference outputs.
    for entry in m.models.values().filter(|e| e.file.ends_with(".onnx")) {
        assert!(
            refs["models"].get(&entry.file).is_some(),
            "{} has no reference outputs",
            entry.file
        );
    }
    assert_eq!(checked, 8, "all eight ONNX models checked");
}
