//! Microphone capture through cpal. The audio callback only copies samples into a lock-free
//! SPSC ring (`ringbuf`): no allocation, no lock, no logging there. A consumer thread
//! downmixes to mono, resamples to 16 kHz and 44.1 kHz (the rates the audio stage reads) and
//! stamps each block against the video's clock, then hands the blocks to the audio channel,
//! dropping the oldest (counted) when the stage is behind.
//!
//! ```text
//! cpal callback ─push_slice─▶ ring (SPSC) ─▶ affectstream-mic thread ─┬▶ 16 kHz ─┐
//!                                             downmix, resample, pts  └▶ 44.1 kHz ┴▶ audio channel
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_channel::Receiver;
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Producer, Split};

use super::resample::{Resampler, downmix};
use super::{AudioBlock, Delivery};

/// The rates the audio stage reads: VAD at 16 kHz, speech features at 44.1 kHz.
pub const OUTPUT_RATES: [u32; 2] = [16_000, 44_100];

/// Errors opening the microphone. Each names the device and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MicrophoneError {
    #[error("no microphone found{}", available_list(.available))]
    NoDefault { available: Vec<String> },
    #[error("no microphone named '{wanted}'{}", available_list(.available))]
    NotFound {
        wanted: String,
        available: Vec<String>,
    },
    #[error("cannot open the microphone '{device}': {message}")]
    Open { device: String, message: String },
    #[error("cannot start the microphone thread: {0}")]
    Thread(String),
}

fn available_list(names: &[String]) -> String {
    if names.is_empty() {
        " (the audio system lists no input devices)".into()
    } else {
        format!(" (inputs: {})", names.join(", "))
    }
}

pub use super::camera::StreamClock;

/// Microphone settings.
#[derive(Debug, Clone)]
pub struct MicrophoneOptions {
    /// Part of the device's name (case-insensitive) or its id; None: the default input.
    pub device: Option<String>,
    /// Seconds of device audio the ring holds before the callback has to drop (counted).
    pub ring_seconds: f32,
    /// Blocks the output channel holds before the oldest is dropped (counted).
    pub queue: usize,
    /// How often the consumer thread drains the ring.
    pub poll: Duration,
}

impl Default for MicrophoneOptions {
    fn default() -> Self {
        Self {
            device: None,
            ring_seconds: 2.0,
            queue: super::AUDIO_QUEUE,
            poll: Duration::from_millis(10),
        }
    }
}

/// Counters of a running microphone.
#[derive(Debug, Default)]
pub struct MicrophoneStats {
    /// Device samples the callback could not store (ring full: the consumer fell behind).
    pub overflow_samples: AtomicU64,
    /// Blocks dropped from the output channel (oldest first) because the stage was behind.
    pub dropped_blocks: Arc<AtomicU64>,
    /// Blocks delivered.
    pub blocks: AtomicU64,
    /// Stream errors reported by the audio system.
    pub stream_errors: AtomicU64,
}

/// A running microphone. Dropping it (or [`Microphone::stop`]) stops the stream and the
/// consumer thread, which closes the audio channel.
pub struct Microphone {
    stream: Option<cpal::Stream>,
    stop: Arc<AtomicBool>,
    consumer: Option<JoinHandle<()>>,
    /// The device's name.
    pub name: String,
    /// The device's sample rate.
    pub rate: u32,
    /// The device's channel count.
    pub channels: u16,
    /// Counters.
    pub stats: Arc<MicrophoneStats>,
}

/// Names of the input devices the default audio host lists.
pub fn input_device_names() -> Vec<String> {
    let host = cpal::default_host();
    host.input_devices()
        .map(|devices| devices.map(|d| device_name(&d)).collect())
        .unwrap_or_default()
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .or_else(|_| device.id().map(|id| id.to_string()))
        .unwrap_or_else(|_| "unnamed device".into())
}

fn find_device(wanted: Option<&str>) -> Result<cpal::Device, MicrophoneError> {
    let host = cpal::default_host();
    match wanted {
        None => host
            .default_input_device()
            .ok_or_else(|| MicrophoneError::NoDefault {
                available: input_device_names(),
            }),
        Some(wanted) => {
            let lower = wanted.to_lowercase();
            let devices = host.input_devices().map_err(|e| MicrophoneError::Open {
                device: wanted.to_owned(),
                message: e.to_string(),
            })?;
            for device in devices {
                let id = device.id().map(|id| id.to_string()).unwrap_or_default();
                if id == wanted || device_name(&device).to_lowercase().contains(&lower) {
                    return Ok(device);
                }
            }
            Err(MicrophoneError::NotFound {
                wanted: wanted.to_owned(),
                available: input_device_names(),
            })
        }
    }
}

impl Microphone {
    /// Opens the microphone and starts delivering blocks at 16 kHz and 44.1 kHz, stamped by
    /// `clock`. Returns the running microphone and the channel its blocks arrive on.
    pub fn start(
        options: &MicrophoneOptions,
        clock: StreamClock,
    ) -> Result<(Self, Receiver<AudioBlock>), MicrophoneError> {
        let device = find_device(options.device.as_deref())?;
        let name = device_name(&device);
        let open_error = |e: &dyn std::fmt::Display| MicrophoneError::Open {
            device: name.clone(),
            message: e.to_string(),
        };
        let config = device.default_input_config().map_err(|e| open_error(&e))?;
        let rate = config.sample_rate();
        let channels = config.channels();
        let format = config.sample_format();
        let capacity = ((rate as f32 * f32::from(channels) * options.ring_seconds.max(0.05))
            as usize)
            .max(1024);
        let (producer, consumer) = HeapRb::<f32>::new(capacity).split();
        let stats = Arc::new(MicrophoneStats::default());
        let stream_config: cpal::StreamConfig = config.into();
        let stream = build_stream(&device, stream_config, format, producer, stats.clone())
            .map_err(|e| open_error(&e))?;

        let (tx, rx) = crossbeam_channel::bounded(options.queue.max(2));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            ring: consumer,
            channels: usize::from(channels),
            rate,
            resamplers: OUTPUT_RATES.map(|to| Resampler::new(rate, to)),
            out: Delivery::drop_oldest(tx, rx.clone(), stats.dropped_blocks.clone()),
            clock,
            stop: stop.clone(),
            stats: stats.clone(),
            poll: options.poll,
        };
        let consumer = std::thread::Builder::new()
            .name("affectstream-mic".into())
            .spawn(move || worker.run())
            .map_err(|e| MicrophoneError::Thread(e.to_string()))?;
        stream.play().map_err(|e| open_error(&e))?;
        tracing::info!(device = %name, rate, channels, ?format, "microphone open");
        Ok((
            Self {
                stream: Some(stream),
                stop,
                consumer: Some(consumer),
                name,
                rate,
                channels,
                stats,
            },
            rx,
        ))
    }

    /// A flag that stops the consumer thread when set (e.g. when the video ends).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops the stream and the consumer thread (the audio channel closes).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(stream) = self.stream.take() {
            stream.pause().ok();
            drop(stream);
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.join().ok();
        }
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type RingProducer = ringbuf::HeapProd<f32>;
type RingConsumer = ringbuf::HeapCons<f32>;

/// Builds the input stream whose callback only copies samples into the ring.
fn build_stream(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    format: cpal::SampleFormat,
    mut producer: RingProducer,
    stats: Arc<MicrophoneStats>,
) -> Result<cpal::Stream, cpal::Error> {
    let errors = stats.clone();
    let on_error = move |_e: cpal::Error| {
        // Counted only: this may run on the audio thread too.
        errors.stream_errors.fetch_add(1, Ordering::Relaxed);
    };
    macro_rules! converting {
        ($t:ty, $to_f32:expr) => {{
            let stats = stats.clone();
            device.build_input_stream(
                config,
                move |data: &[$t], _: &cpal::InputCallbackInfo| {
                    // Convert through a stack buffer: no allocation in the callback.
                    let mut scratch = [0.0f32; 512];
                    for chunk in data.chunks(scratch.len()) {
                        for (dst, src) in scratch.iter_mut().zip(chunk) {
                            *dst = $to_f32(*src);
                        }
                        let pushed = producer.push_slice(&scratch[..chunk.len()]);
                        if pushed < chunk.len() {
                            stats
                                .overflow_samples
                                .fetch_add((chunk.len() - pushed) as u64, Ordering::Relaxed);
                        }
                    }
                },
                on_error,
                None,
            )
        }};
    }
    match format {
        cpal::SampleFormat::F32 => {
            let stats = stats.clone();
            device.build_input_stream(
                config,
                move |data: &[f32], _: &cpal::InputCallbackInfo| {
                    let pushed = producer.push_slice(data);
                    if pushed < data.len() {
                        stats
                            .overflow_samples
                            .fetch_add((data.len() - pushed) as u64, Ordering::Relaxed);
                    }
                },
                on_error,
                None,
            )
        }
        cpal::SampleFormat::I16 => converting!(i16, |s: i16| f32::from(s) / 32768.0),
        cpal::SampleFormat::I32 => converting!(i32, |s: i32| s as f32 / 2_147_483_648.0),
        cpal::SampleFormat::U16 => {
            converting!(u16, |s: u16| (f32::from(s) - 32768.0) / 32768.0)
        }
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not supported (f32, i16, i32 or u16 are)"),
        )),
    }
}

/// The consumer side: ring → mono → 16 kHz and 44.1 kHz blocks with timestamps.
struct Worker {
    ring: RingConsumer,
    channels: usize,
    rate: u32,
    resamplers: [Resampler; 2],
    /// Drop-oldest into the audio channel (the stage being behind never stalls the ring).
    out: Delivery<AudioBlock>,
    clock: StreamClock,
    stop: Arc<AtomicBool>,
    stats: Arc<MicrophoneStats>,
    poll: Duration,
}

impl Worker {
    fn run(mut self) {
        let mut raw = vec![0.0f32; 8192 * self.channels.max(1)];
        let mut mono = Vec::with_capacity(8192);
        // Stream time of device sample 0: the clock when the first samples were seen, minus
        // their duration. Later blocks are timed by sample count (no jitter from polling).
        let mut origin: Option<Duration> = None;
        let mut carry = 0usize; // samples of an incomplete multichannel frame
        while !self.stop.load(Ordering::Relaxed) {
            let got = self.ring.pop_slice(&mut raw[carry..]) + carry;
            if got == carry {
                std::thread::sleep(self.poll);
                continue;
            }
            let whole = got - got % self.channels.max(1);
            mono.clear();
            downmix(&raw[..whole], self.channels, &mut mono);
            raw.copy_within(whole..got, 0);
            carry = got - whole;
            if mono.is_empty() {
                continue;
            }
            let origin = *origin.get_or_insert_with(|| {
                let seen = Duration::from_secs_f64(mono.len() as f64 / f64::from(self.rate));
                (self.clock)().saturating_sub(seen)
            });
            for (resampler, rate) in self.resamplers.iter_mut().zip(OUTPUT_RATES) {
                let first = resampler.produced();
                let mut samples = Vec::with_capacity(mono.len() * rate as usize / 8000 + 16);
                resampler.process(&mono, &mut samples);
                if samples.is_empty() {
                    continue;
                }
                let pts = origin + Duration::from_secs_f64(first as f64 / f64::from(rate));
                let block = AudioBlock {
                    rate,
                    pts: Some(pts),
                    samples,
                };
                // Drop-oldest holds a receiving end, so the channel never closes under it.
                if self.out.send(block).is_ok() {
                    self.stats.blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
