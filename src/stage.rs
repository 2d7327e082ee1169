//! The one loop every single-input stage thread runs: take an item from the bounded input
//! channel, process it, send what it produced downstream; stop when the input closes (after
//! letting the stage flush) or when the downstream is gone; hand the stage back, reset, so its
//! models serve the next source. A failure is returned with the position of the item that
//! caused it (frame index and stream time), so "the face stage failed" always says where.
//!
//! The face detector, the expression encoder and the audio stage implement [`Stage`]; fusion
//! joins three inputs by time and has its own loop.

use std::fmt;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Where an input item sits in its stream, for error messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Index of the video frame (None for items that are not frames, such as audio blocks).
    pub frame: Option<u64>,
    /// Stream time of the item.
    pub t: Duration,
}

/// A stage failure with the position of the input that caused it.
#[derive(Debug, thiserror::Error)]
pub struct StageError {
    /// The stage's name (`face`, `encode`, `audio`).
    pub stage: &'static str,
    /// The input that failed, when the stage could say.
    pub at: Option<Position>,
    /// What failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(Position {
                frame: Some(index),
                t,
            }) => write!(
                f,
                "frame {index} at {:.3} s of stream time: {}",
                t.as_secs_f64(),
                self.source
            ),
            Some(Position { frame: None, t }) => write!(
                f,
                "{} stage at {:.3} s of stream time: {}",
                self.stage,
                t.as_secs_f64(),
                self.source
            ),
            None => write!(f, "{} stage: {}", self.stage, self.source),
        }
    }
}

/// The sending side a stage writes into; remembers when the receiver is gone so the loop
/// can stop early without treating it as a failure.
pub struct Emit<'a, T> {
    tx: &'a Sender<T>,
    closed: bool,
}

impl<T> Emit<'_, T> {
    /// Sends one output downstream (blocking while the bounded channel is full); a no-op once
    /// the receiver is gone.
    pub fn send(&mut self, item: T) {
        if !self.closed && self.tx.send(item).is_err() {
            self.closed = true;
        }
    }

    /// True once the receiver has gone away.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// A pipeline stage that turns each input item into zero or more outputs.
pub trait Stage {
    /// What the stage reads.
    type Input;
    /// What it produces.
    type Output;
    /// Its own error type.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Short name for thread names and errors.
    const NAME: &'static str;

    /// Processes one input, sending what it produced into `out`.
    fn process(
        &mut self,
        input: Self::Input,
        out: &mut Emit<'_, Self::Output>,
    ) -> Result<(), Self::Error>;

    /// Sends what the stage still holds once the input has closed (default: nothing).
    fn finish(&mut self, _out: &mut Emit<'_, Self::Output>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Forgets the state of the stream just processed, keeping the models.
    fn reset(&mut self);

    /// Where `input` sits in its stream, for the error message of a failure on it. None when
    /// the stage's own errors already say it.
    fn position(input: &Self::Input) -> Option<Position>;
}

/// Runs `stage` on every item of `input` until it closes (then [`Stage::finish`]) or the
/// receiver of `output` is gone, and hands the stage back reset. The first failure ends the
/// loop and is returned with the position of the item that caused it.
pub fn run<S: Stage>(
    mut stage: S,
    input: Receiver<S::Input>,
    output: Sender<S::Output>,
) -> Result<S, StageError> {
    let mut out = Emit {
        tx: &output,
        closed: false,
    };
    let fail = |at, e: S::Error| StageError {
        stage: S::NAME,
        at,
        source: Box::new(e),
    };
    for item in input {
        let at = S::position(&item);
        stage.process(item, &mut out).map_err(|e| fail(at, e))?;
        if out.is_closed() {
            stage.reset();
            return Ok(stage);
        }
    }
    stage.finish(&mut out).map_err(|e| fail(None, e))?;
    stage.reset();
    Ok(stage)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Doubles each number; fails on 13; emits its count at the end.
    #[derive(Default)]
    struct Doubler {
        seen: u64,
        resets: u32,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("unlucky number")]
    struct Unlucky;

    impl Stage for Doubler {
        type Input = u64;
        type Output = u64;
        type Error = Unlucky;
        const NAME: &'static str = "doubler";

        fn process(&mut self, input: u64, out: &mut Emit<'_, u64>) -> Result<(), Unlucky> {
            if input == 13 {
                return Err(Unlucky);
            }
            self.seen += 1;
            out.send(input * 2);
            Ok(())
        }

        fn finish(&mut self, out: &mut Emit<'_, u64>) -> Result<(), Unlucky> {
            out.send(1000 + self.seen);
            Ok(())
        }

        fn reset(&mut self) {
            self.seen = 0;
            self.resets += 1;
        }

        fn position(input: &u64) -> Option<Position> {
            Some(Position {
                frame: Some(*input),
                t: Duration::from_millis(40 * input),
            })
        }
    }

    #[test]
    fn processes_every_item_then_finishes_and_resets() {
        let (in_tx, in_rx) = crossbeam_channel::bounded(8);
        let (out_tx, out_rx) = crossbeam_channel::bounded(8);
        for i in 1..=3 {
            in_tx.send(i).unwrap();
        }
        drop(in_tx);
        let stage = run(Doubler::default(), in_rx, out_tx).unwrap();
        assert_eq!(out_rx.iter().collect::<Vec<_>>(), vec![2, 4, 6, 1003]);
        assert_eq!((stage.seen, stage.resets), (0, 1));
    }

    #[test]
    fn a_failure_names_the_frame_and_its_stream_time() {
        let (in_tx, in_rx) = crossbeam_channel::bounded(8);
        let (out_tx, _out_rx) = crossbeam_channel::bounded(8);
        in_tx.send(13).unwrap();
        drop(in_tx);
        let err = run(Doubler::default(), in_rx, out_tx).err().unwrap();
        assert_eq!(
            err.to_string(),
            "frame 13 at 0.520 s of stream time: unlucky number"
        );
        assert_eq!(err.stage, "doubler");
    }

    #[test]
    fn a_gone_receiver_ends_the_loop_without_an_error() {
        let (in_tx, in_rx) = crossbeam_channel::bounded(8);
        let (out_tx, out_rx) = crossbeam_channel::bounded(8);
        drop(out_rx);
        in_tx.send(1).unwrap();
        in_tx.send(2).unwrap();
        let stage = run(Doubler::default(), in_rx, out_tx).unwrap();
        assert_eq!(stage.resets, 1);
    }
}
