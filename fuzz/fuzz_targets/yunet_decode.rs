//! Arbitrary detector outputs and input sizes through YuNet decoding and NMS.
#![no_main]

use affectstream::face::detection::{StrideOutputs, decode_yunet, nms};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let w = u32::from(u16::from_le_bytes([data[0], data[1]]) % 2048);
    let h = u32::from(u16::from_le_bytes([data[2], data[3]]) % 2048);
    let threshold = f32::from(data[4]) / 255.0;
    let floats: Vec<f32> = data[8..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = floats.len();
    let (a, b, c) = (n / 15, n / 15 * 2, n / 15 * 6);
    let outs = [StrideOutputs {
        stride: [8, 16, 32][usize::from(data[5]) % 3],
        cls: &floats[..a],
        obj: &floats[a..b],
        bbox: &floats[b..c],
        kps: &floats[c..],
    }];
    let dets = decode_yunet(&outs, w, h, threshold);
    let kept = nms(dets, f32::from(data[6]) / 255.0);
    for d in &kept {
        let _ = d.bbox.iou(&d.bbox);
    }
});
