//! Arbitrary block sizes and samples through the VAD chunker and its context handling.
#![no_main]

use affectstream::audio::vad::{Chunker, VAD_CHUNK, VAD_CONTEXT, vad_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut chunker = Chunker::default();
    let mut context = [0.0f32; VAD_CONTEXT];
    let mut input = [0.0f32; VAD_CONTEXT + VAD_CHUNK];
    let mut pushed = 0usize;
    let mut taken = 0usize;
    for block in data.chunks(1 + usize::from(data.first().copied().unwrap_or(0))) {
        let samples: Vec<f32> = block.iter().map(|b| f32::from(*b) / 128.0 - 1.0).collect();
        pushed += samples.len();
        chunker.push(&samples);
        while let Some(chunk) = chunker.next_chunk() {
            taken += VAD_CHUNK;
            context = vad_input(&context, &chunk, &mut input);
            assert_eq!(context[VAD_CONTEXT - 1], chunk[VAD_CHUNK - 1]);
        }
    }
    assert_eq!(pushed, taken + chunker.pending());
});
