//! The one error type of the core. The binding maps each variant to a Python exception.

/// Everything that can go wrong in the core on account of the caller's data or files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed values that are not acceptable (NaN, out-of-range ids, bad params).
    #[error("{0}")]
    InvalidInput(String),
    /// Two inputs that must agree in shape do not.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A text file is malformed; `line` is 1-based.
    #[error("{path}: line {line}: {msg}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
    /// A buffer whose size comes from the caller's data or a file could not be allocated.
    #[error("{0}")]
    Memory(String),
    /// The operating system refused a read or a write.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Short for `std::result::Result<T, xmrrs_core::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::InvalidInput`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
    /// Builds an [`Error::Shape`] from anything printable.
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
}
