//! A streaming band-limited resampler (windowed sinc, Blackman window) for the microphone
//! path: any device rate to the 16 kHz and 44.1 kHz the audio stage reads. Output sample `n`
//! sits at input time `n / out_rate`, so timestamps follow from sample counts.

/// Converts a stream of mono samples from one rate to another, block by block.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Low-pass cutoff as a fraction of the input Nyquist frequency.
    cutoff: f64,
    /// Taps on each side of the centre.
    half: usize,
    /// Input not yet fully used; index 0 is input sample `offset`.
    buffer: Vec<f32>,
    /// Position of the next output sample, in input samples, relative to `buffer[0]`.
    pos: f64,
    /// Output samples produced so far.
    produced: u64,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz (both > 0).
    pub fn new(from: u32, to: u32) -> Self {
        let (from, to) = (f64::from(from.max(1)), f64::from(to.max(1)));
        let ratio = (to / from).min(1.0);
        // 16 zero crossings of the (stretched) sinc on each side: ~70 dB stop band.
        let half = (16.0 / ratio).ceil() as usize;
        Self {
            step: from / to,
            cutoff: ratio * 0.92,
            half,
            buffer: Vec::new(),
            // The first output sample is input sample 0; the missing past counts as silence.
            pos: 0.0,
            produced: 0,
        }
    }

    /// Output samples produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Resamples `input` (continuing the stream) and appends the output samples that are
    /// complete to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.buffer.is_empty() && self.produced == 0 {
            // Silence before the first sample, so the first outputs have a full window.
            self.buffer.resize(self.half, 0.0);
            self.pos = self.half as f64;
        }
        self.buffer.extend_from_slice(input);
        let half = self.half as isize;
        loop {
            let centre = self.pos.floor() as isize;
            if centre + half >= self.buffer.len() as isize {
                break;
            }
            let (mut acc, mut norm) = (0.0f64, 0.0f64);
            for k in (centre - half + 1).max(0)..=centre + half {
                let x = self.pos - k as f64;
                let w = self.cutoff * sinc(self.cutoff * x) * blackman(x / (half as f64 + 1.0));
                acc += w * f64::from(self.buffer[k as usize]);
                norm += w;
            }
            out.push(if norm.abs() > 1e-9 {
                (acc / norm) as f32
            } else {
                0.0
            });
            self.produced += 1;
            self.pos += self.step;
        }
        // Drop input no future output needs.
        let keep_from = (self.pos.floor() as isize - half).max(0) as usize;
        if keep_from > 0 {
            self.buffer.drain(..keep_from.min(self.buffer.len()));
            self.pos -= keep_from as f64;
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Blackman window on [-1, 1].
fn blackman(u: f64) -> f64 {
    if u.abs() >= 1.0 {
        return 0.0;
    }
    let t = std::f64::consts::PI * (u + 1.0);
    0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos()
}

/// Mixes interleaved `channels`-channel samples down to mono (the mean of the channels).
pub fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    let channels = channels.max(1);
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as f32
            })
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn resample_in_blocks(input: &[f32], from: u32, to: u32, block: usize) -> Vec<f32> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        for chunk in input.chunks(block) {
            r.process(chunk, &mut out);
        }
        out
    }

    #[test]
    fn keeps_a_tone_in_the_pass_band_at_the_right_length() {
        for (from, to) in [
            (48_000, 16_000),
            (44_100, 16_000),
            (48_000, 44_100),
            (16_000, 44_100),
        ] {
            let input = tone(440.0, from, 1.0);
            let out = resample_in_blocks(&input, from, to, 480);
            let expected = f64::from(to);
            assert!(
                (out.len() as f64 - expected).abs() < expected * 0.01 + 64.0,
                "{from}->{to}: {} samples",
                out.len()
            );
            let settled = &out[200..out.len() - 200];
            assert!(
                (rms(settled) - 0.5 / 2f64.sqrt()).abs() < 0.01,
                "{from}->{to}"
            );
            // Compare with the ideal tone at the output rate (same phase: no delay).
            let ideal = tone(440.0, to, 1.0);
            let err: f64 = settled
                .iter()
                .zip(&ideal[200..])
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                / settled.len() as f64;
            assert!(err.sqrt() < 0.01, "{from}->{to}: rms error {}", err.sqrt());
        }
    }

    #[test]
    fn removes_what_the_new_rate_cannot_hold() {
        // 10 kHz is above the 8 kHz Nyquist frequency of 16 kHz: it must not alias in.
        let input = tone(10_000.0, 48_000, 1.0);
        let out = resample_in_blocks(&input, 48_000, 16_000, 1024);
        assert!(rms(&out[200..out.len() - 200]) < 0.01);
    }

    #[test]
    fn block_size_does_not_change_the_output() {
        let input = tone(300.0, 48_000, 0.5);
        let a = resample_in_blocks(&input, 48_000, 16_000, 1);
        let b = resample_in_blocks(&input, 48_000, 16_000, 4096);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5, -1.0, 1.0], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5, 0.0]);
    }
}
