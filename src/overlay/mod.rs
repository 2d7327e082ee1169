//! The live overlay (`affectstream demo`): an egui window showing the video with each face's
//! box, id and landmarks, the circumplex with face, voice and fused points, rolling timelines,
//! the modality gates, a conflict meter and a status line, all read from the latest pipeline
//! state. The pipeline never waits for the UI: it overwrites [`state::LiveState`], and the UI
//! paints a [`state::DisplayState`] snapshot of it (frames the UI had no time for are counted
//! and skipped, never queued).
//!
//! - [`state`]: the shared latest state and its snapshot;
//! - [`paint`]: pure painting from a snapshot (also rendered by the snapshot tests);
//! - [`app`]: the eframe window and its keys;
//! - [`recorder`]: the `r` key's JSON Lines writer.

pub mod app;
pub mod paint;
pub mod recorder;
pub mod state;

pub use app::{OverlayError, OverlaySummary, QuitSignal, check_display, run_overlay};
pub use paint::OverlayView;
pub use recorder::Recorder;
pub use state::{DisplayState, LiveState, SourceState, VoiceInput};
