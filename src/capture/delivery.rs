//! How captured items reach a stage, written once: offline sources block on a full channel
//! (every frame is processed), live ones drop the oldest queued item and count it (the newest
//! always gets in and the producer never waits). The capture's appsinks, the microphone
//! thread and the demo's display tap all deliver through [`Delivery`]. Also the channels a
//! capture feeds ([`CaptureTargets`], [`CaptureOutputs`]) and its counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{AudioBlock, VideoFrame};

/// Capacity of the video channel (decoded frames waiting for the face stage).
pub const VIDEO_QUEUE: usize = 4;
/// Capacity of the audio channel (blocks waiting for the audio stage).
pub const AUDIO_QUEUE: usize = 64;

/// The receiving stage is gone: nothing delivered from now on would be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the receiving stage is gone")]
pub struct Closed;

/// The sending end of a bounded channel with its delivery policy: lossless (block while the
/// channel is full) or drop-oldest (take the oldest item out, count it, put the new one in).
pub struct Delivery<T> {
    tx: Sender<T>,
    /// Drop-oldest only: a receiving end of the same channel to take the oldest item from.
    /// Holding it keeps the channel open, so a drop-oldest delivery is never [`Closed`]; a
    /// lossless one holds none, so a stage that dies closes its channel and the producer
    /// stops instead of blocking forever.
    oldest: Option<Receiver<T>>,
    dropped: Arc<AtomicU64>,
}

impl<T> Clone for Delivery<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            oldest: self.oldest.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

impl<T> Delivery<T> {
    /// Blocks while the channel is full: nothing is lost.
    pub fn lossless(tx: Sender<T>) -> Self {
        Self {
            tx,
            oldest: None,
            dropped: Arc::default(),
        }
    }

    /// Never blocks: a full channel loses its oldest item (taken out through `oldest`, a
    /// receiving end of the same channel), counted in `dropped`.
    pub fn drop_oldest(tx: Sender<T>, oldest: Receiver<T>, dropped: Arc<AtomicU64>) -> Self {
        Self {
            tx,
            oldest: Some(oldest),
            dropped,
        }
    }

    /// `tx` with drop-oldest from `rx` when `live`, else lossless.
    pub fn new(tx: Sender<T>, rx: &Receiver<T>, live: bool, dropped: Arc<AtomicU64>) -> Self {
        if live {
            Self::drop_oldest(tx, rx.clone(), dropped)
        } else {
            Self {
                tx,
                oldest: None,
                dropped,
            }
        }
    }

    /// Hands `item` to the stage under this delivery's policy.
    pub fn send(&self, item: T) -> Result<(), Closed> {
        deliver(&self.tx, self.oldest.as_ref(), item, &self.dropped)
    }

    /// Items dropped so far (always 0 when lossless).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The policy itself. Lossless (`oldest` None): blocks until there is room. Drop-oldest:
/// when the queue is full, takes the oldest item out and counts it in `dropped`, so the newest
/// always gets in and the caller never waits.
pub(crate) fn deliver<T>(
    tx: &Sender<T>,
    oldest: Option<&Receiver<T>>,
    item: T,
    dropped: &AtomicU64,
) -> Result<(), Closed> {
    let Some(oldest) = oldest else {
        return tx.send(item).map_err(|_| Closed);
    };
    let mut item = item;
    loop {
        match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                if oldest.try_recv().is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                item = back;
            }
            Err(TrySendError::Disconnected(_)) => return Err(Closed),
        }
    }
}

/// Which elementary streams the source turned out to have (sent once, when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// A video stream is being decoded.
    pub has_video: bool,
    /// An audio stream is being decoded.
    pub has_audio: bool,
}

/// Channels a running capture feeds.
pub struct CaptureOutputs {
    /// Decoded video frames.
    pub video: Receiver<VideoFrame>,
    /// Decoded audio blocks (both rates interleaved in arrival order).
    pub audio: Receiver<AudioBlock>,
    /// The stream layout, once known.
    pub layout: Receiver<Layout>,
}

/// Counters a capture updates from its streaming threads (shared across the reconnects of
/// one stream).
#[derive(Debug)]
pub struct CaptureCounters {
    /// Video frames decoded.
    pub frames: AtomicU64,
    /// Video frames dropped because the face stage was behind (live sources only).
    pub dropped_frames: Arc<AtomicU64>,
    /// Audio blocks dropped because the audio stage was behind (live sources only).
    pub dropped_audio: Arc<AtomicU64>,
    /// Milliseconds since `epoch` at which the last buffer (video or audio) arrived.
    last_buffer_ms: AtomicU64,
    epoch: Instant,
}

impl Default for CaptureCounters {
    fn default() -> Self {
        Self {
            frames: AtomicU64::new(0),
            dropped_frames: Arc::default(),
            dropped_audio: Arc::default(),
            last_buffer_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl CaptureCounters {
    /// Notes that a buffer arrived now.
    pub(super) fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_buffer_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// When the last buffer arrived; None before the first one.
    pub fn last_buffer(&self) -> Option<Instant> {
        match self.last_buffer_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }
}

/// The sending ends a capture delivers into. A stream that reconnects hands the same targets
/// to each new capture, so the stages behind it keep running across reconnects.
#[derive(Clone)]
pub struct CaptureTargets {
    pub(super) video: Delivery<VideoFrame>,
    pub(super) audio: Delivery<AudioBlock>,
    pub(super) layout: Sender<Layout>,
    /// Counters of everything delivered and dropped.
    pub counters: Arc<CaptureCounters>,
}

impl CaptureTargets {
    /// Bounded channels for a capture and the receiving ends for the stages; `live` makes
    /// a full channel drop its oldest item instead of blocking.
    pub fn channels(live: bool) -> (Self, CaptureOutputs) {
        let (video_tx, video_rx) = crossbeam_channel::bounded(VIDEO_QUEUE);
        let (audio_tx, audio_rx) = crossbeam_channel::bounded(AUDIO_QUEUE);
        let (layout_tx, layout_rx) = crossbeam_channel::bounded(1);
        let counters = Arc::new(CaptureCounters::default());
        (
            Self {
                video: Delivery::new(video_tx, &video_rx, live, counters.dropped_frames.clone()),
                audio: Delivery::new(audio_tx, &audio_rx, live, counters.dropped_audio.clone()),
                layout: layout_tx,
                counters,
            },
            CaptureOutputs {
                video: video_rx,
                audio: audio_rx,
                layout: layout_rx,
            },
        )
    }
}

/// The targets as the streaming threads see them: emptied when the capture is dropped, so a
/// pipeline that is slow to shut down no longer holds the stages' channels open.
pub(super) type TargetSlot = Arc<Mutex<Option<CaptureTargets>>>;

/// The targets, unless the capture has been detached from them.
pub(super) fn current_targets(slot: &TargetSlot) -> Option<CaptureTargets> {
    slot.lock().ok().and_then(|targets| targets.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn lossless_blocks_while_full_and_loses_nothing() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let delivery = Delivery::lossless(tx);
        delivery.send(1).unwrap();
        let returned = Arc::new(AtomicBool::new(false));
        let sender = {
            let delivery = delivery.clone();
            let returned = returned.clone();
            std::thread::spawn(move || {
                let sent = delivery.send(2);
                returned.store(true, Ordering::SeqCst);
                sent
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !returned.load(Ordering::SeqCst),
            "a full lossless send returned"
        );
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(rx.recv().unwrap(), 2);
        assert_eq!(delivery.dropped(), 0);
    }

    #[test]
    fn drop_oldest_never_waits_keeps_the_newest_and_counts_the_rest() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let dropped = Arc::new(AtomicU64::new(0));
        let delivery = Delivery::drop_oldest(tx, rx.clone(), dropped.clone());
        for i in 1..=5 {
            delivery.send(i).unwrap();
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(delivery.dropped(), 3);
        // Room again: nothing more is dropped.
        delivery.send(6).unwrap();
        assert_eq!(rx.recv().unwrap(), 6);
        assert_eq!(delivery.dropped(), 3);
    }

    #[test]
    fn a_lossless_delivery_whose_stage_is_gone_is_closed_even_while_blocked() {
        let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
        let delivery = Delivery::lossless(tx);
        delivery.send(1).unwrap();
        let blocked = {
            let delivery = delivery.clone();
            std::thread::spawn(move || delivery.send(2))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert_eq!(blocked.join().unwrap(), Err(Closed));
        assert_eq!(delivery.send(3), Err(Closed));
    }

    #[test]
    fn a_drop_oldest_delivery_stays_open_while_it_holds_the_receiving_end() {
        // What a live capture relies on: its stage's death is noticed by the supervisor,
        // not by the delivery, which keeps dropping instead of blocking.
        let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
        let delivery = Delivery::new(tx, &rx, true, Arc::default());
        drop(rx);
        for i in 0..3 {
            delivery.send(i).unwrap();
        }
        assert_eq!(delivery.dropped(), 2);
    }

    #[test]
    fn capture_channels_count_drops_in_the_capture_counters_when_live() {
        let (targets, outputs) = CaptureTargets::channels(true);
        for i in 0..VIDEO_QUEUE as u64 + 2 {
            let frame = VideoFrame::from_rgb(i, Duration::ZERO, 1, 1, vec![0; 3]);
            targets.video.send(frame).unwrap();
        }
        assert_eq!(targets.counters.dropped_frames.load(Ordering::Relaxed), 2);
        let first = outputs.video.try_recv().unwrap();
        assert_eq!(first.meta.index, 2);
        // Offline: the channel closes with its stage.
        let (offline, outputs) = CaptureTargets::channels(false);
        drop(outputs);
        let block = AudioBlock {
            rate: 16_000,
            pts: None,
            samples: vec![0.0; 4],
        };
        assert_eq!(offline.audio.send(block), Err(Closed));
    }
}
