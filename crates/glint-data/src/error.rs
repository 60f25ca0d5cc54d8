//! Data errors. Every variant names the file at fault so the CLI can print one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read (missing, permissions, ...).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not an image we can decode (corrupt, empty, truncated, unknown format).
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
    /// The file is not valid JSON / JSON Lines, or lacks a required field.
    #[error("{path}{location}: {message}")]
    Format {
        path: PathBuf,
        /// Where in the file, already formatted: `":12"` (line) or `" (annotation id 7)"`; may be empty.
        location: String,
        message: String,
    },
    /// Writing output failed.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An argument is out of range (e.g. an image size of zero).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub fn format(path: impl Into<PathBuf>, location: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), location: location.into(), message: message.into() }
    }
}
