//! Arbitrary samples (NaN, inf, any length) through the MFCC features and the prosody extractor.
#![no_main]

use affectstream::audio::prosody::ProsodyExtractor;
use affectstream::audio::speech_features::{MfccExtractor, SER_FRAMES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let samples: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut mfcc = MfccExtractor::new();
    let mut out = [0.0f32; SER_FRAMES];
    mfcc.ser_features(&samples, &mut out);
    let mut prosody = ProsodyExtractor::new();
    let _ = prosody.features(&samples);
});
