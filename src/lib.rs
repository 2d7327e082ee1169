//! affectstream: real-time multimodal emotion recognition. Video and audio are captured with
//! GStreamer, faces are found, tracked and encoded, speech is detected and encoded, and both are
//! fused per face into valence, arousal and an audio-visual conflict score.
//!
//! One module per pipeline stage, in data-flow order: [`capture`] → [`face`] → [`encode`]
//! (expression, speech) and [`audio`] → [`fusion`] → [`sink`]; [`metrics`] measures every
//! frame; [`pipeline`] wires the stages into threads; [`manifest`] describes the models;
//! [`home`] says where the installed manifest, models and ONNX Runtime are. With the `broker`
//! feature, `broker` and `worker` spread cameras over worker processes through NATS JetStream.
//! See ARCHITECTURE.md.

pub mod audio;
pub mod bench;
#[cfg(feature = "broker")]
pub mod broker;
pub mod capture;
pub mod config;
#[cfg(feature = "overlay")]
pub mod demo;
pub mod encode;
pub mod eval;
pub mod face;
pub mod fusion;
pub mod home;
pub mod manifest;
pub mod metrics;
#[cfg(feature = "overlay")]
pub mod overlay;
pub mod pipeline;
pub mod record;
pub mod runtime;
pub mod sink;
pub mod stage;
pub mod streams;
#[cfg(feature = "broker")]
pub mod worker;
