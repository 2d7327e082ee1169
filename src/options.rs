//! Command-line options shared by several subcommands: which models, where, on which device,
//! with which fusion configuration; and how a library type's names become an option's values.

use std::path::PathBuf;

use clap::Args;

use affectstream::config::Config;
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
