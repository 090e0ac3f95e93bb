//! The trainer crate's one error type.

use std::path::PathBuf;

/// Everything that can stop a training, evaluation or export run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] models::Error),

    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    #[error("the network has no {name} ({what}); the run's config.toml and checkpoint do not match")]
    MissingOutput { name: String, what: String },

    #[error("the loss became {value} at epoch {epoch} step {step}; lower --lr / --emb-lr, or try --optimizer adamw")]
    NonFiniteLoss { value: f64, epoch: usize, step: usize },

    #[error(
        "the embedding collapsed before epoch {epoch}: the training images' `g` vectors have a spread of {spread:.2e} \
         (about 1 for a healthy embedding), so they no longer tell images apart; lower --lr and --emb-lr (e.g. by 3x) \
         and start a new run"
    )]
    Collapsed { epoch: usize, spread: f64 },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("cannot read config file {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },

    #[error("run directory {path}: {reason}")]
    Run { path: PathBuf, reason: String },

    #[error("--device cuda was asked for but {}", if *built_with_cuda {
        "libtorch sees no CUDA GPU; use --device cpu or auto"
    } else {
        "this trainer was built without CUDA (build it with `--features cuda`); use --device cpu or auto"
    })]
    CudaUnavailable { built_with_cuda: bool },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
