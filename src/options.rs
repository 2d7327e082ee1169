//! Command-line options shared by several subcommands: which models, where, on which device,
//! with which fusion configuration; and how a library type's names become an option's values.

use std::path::PathBuf;

use clap::Args;

use affectstream::capture::CaptureOptions;
use affectstream::config::Config;
use affectstream::face::FaceConfig;
use affectstream::fusion::calibration::CalibrationMode;
use affectstream::pipeline::RunOptions;
use affectstream::runtime::DeviceRequest;

/// How the command line picks one of a library type's names (the library has no clap).
pub fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse::<T>())
}

/// Options every subcommand that loads models shares: which models, where, on which device,
/// and the fusion configuration. Unset options keep the library's defaults.
#[derive(Args)]
pub struct ModelArgs {
    /// Model manifest (default: $AFFECTSTREAM_MODELS_TOML, else models.toml in the data
    /// directory that scripts/setup.sh fills; README: Install).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Directory holding the model files (default: $AFFECTSTREAM_MODEL_DIR, else models/ in the
    /// data directory).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Execution provider: auto (CUDA when available, else CPU), cpu, or cuda (an error when
    /// CUDA cannot be used). Default: auto.
    #[arg(long, value_parser = choice::<DeviceRequest>(DeviceRequest::NAMES))]
    device: Option<DeviceRequest>,
    /// Configuration file (TOML): `[fusion]` (docs/fusion.md); for `run`, also `[streams]`
    /// defaults and `[[stream]]` entries (name, url, per-stream options).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Per-person calibration: `track` (each face and the voice against its own running
    /// baseline) or `off` (raw model values). Overrides `[fusion.calibration] mode`.
    #[arg(long, value_parser = choice::<CalibrationMode>(CalibrationMode::NAMES))]
    calibration: Option<CalibrationMode>,
    /// Face expression ensemble: a set of the manifest's [face_ensemble.sets] (e.g. mini,
    /// big+faceapi, all); default: the manifest's `default`.
    #[arg(long)]
    face_encoders: Option<String>,
    /// Run the expression models on a face track every n-th frame, reusing its last estimate
    /// in between (1..30; new tracks and crops that moved are encoded at once). Default: 1 for
    /// a one-model set, 3 for an ensemble.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=30))]
    encode_every: Option<u32>,
}

impl ModelArgs {
    /// Run options for `source` with these choices over the library's defaults, and the
    /// configuration file (empty when none was given).
    pub fn run_options(&self, source: impl Into<String>) -> anyhow::Result<(RunOptions, Config)> {
        let mut run = RunOptions::new(source);
        if let Some(path) = &self.models {
            run.manifest = path.clone();
        }
        if let Some(dir) = &self.model_dir {
            run.model_dir = dir.clone();
        }
        if let Some(device) = self.device {
            run.device = device;
        }
        run.expression.set = self.face_encoders.clone();
        run.expression.encode_every = self.encode_every;
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        run.fusion.params = config.fusion;
        if let Some(mode) = self.calibration {
            run.fusion.params.calibration.mode = mode;
        }
        Ok((run, config))
    }
}

/// When the face detector runs and how video is decoded: the options `run` and `bench` share.
#[derive(Args)]
pub struct ScheduleArgs {
    /// Run the face detector at least every n-th frame and track in between (1..30; frames
    /// with no tracked face, after a detection that lost or started a track, where a carried
    /// face was lost (from 3 on, where carried faces follow the head), or with motion outside
    /// the tracked faces are always searched).
    #[arg(long, default_value_t = FaceConfig::default().detect_interval,
          value_parser = clap::value_parser!(u32).range(1..=30))]
    detect_every: u32,
    /// Detect at once when this share of the picture outside the tracked faces changed since
    /// the last detection (0..1; 0: off, the interval alone).
    #[arg(long, default_value_t = FaceConfig::default().detect_motion,
          value_parser = unit_interval)]
    detect_motion: f32,
    /// Threads of each video decoder (0: the decoder's choice, one per core; 1: the default,
    /// cheapest per frame when the pipeline's stages or other streams use the other cores).
    #[arg(long, default_value_t = CaptureOptions::default().decode_threads,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    decode_threads: u32,
}

impl ScheduleArgs {
    /// Sets these choices on `run`.
    pub fn apply(&self, run: &mut RunOptions) {
        run.face.detect_interval = self.detect_every;
        run.face.detect_motion = self.detect_motion;
        run.capture.decode_threads = self.decode_threads;
    }
}

/// Parses a number in 0..=1.
pub fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..1"))
    }
}
