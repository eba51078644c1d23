//! The one error type of the crate.
//!
//! Every public function that can fail returns [`Result<T>`]. The variants say what went
//! wrong and where: a shape error names the tensor and both shapes, a device-limit error
//! names the tensor and the limit it broke, a shader error names the entry point.

use std::fmt;

/// Shorthand for `std::result::Result<T, tsumugi::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in tsumugi.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (backends, `WGPU_ADAPTER_NAME`), or none exists.
    NoAdapter {
        /// What was asked for and what was found.
        reason: String,
    },
    /// The adapter refused to create a device.
    RequestDevice {
        /// wgpu's message.
        reason: String,
    },
    /// A tensor has the wrong shape for the operation.
    ShapeMismatch {
        /// Which tensor, e.g. `"matmul: b"`.
        tensor: String,
        /// The shape the operation needs, `[B, T, H]` style; `None` in a position means "any".
        expected: String,
        /// The shape the tensor has.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    DType {
        /// Which tensor.
        tensor: String,
        /// The element type the operation needs.
        expected: crate::DType,
        /// The element type the tensor has.
        found: crate::DType,
    },
    /// An argument that is not a tensor shape is out of range (a length of 0, an empty batch, ...).
    InvalidArgument {
        /// What is wrong, in a sentence.
        message: String,
    },
    /// A buffer or dispatch would exceed what the device allows.
    DeviceLimit {
        /// Which tensor or dispatch.
        tensor: String,
        /// The wgpu limit that would be broken, e.g. `max_storage_buffer_binding_size`.
        limit: &'static str,
        /// What the operation needs.
        needed: u64,
        /// What the device allows.
        allowed: u64,
    },
    /// A WGSL shader failed to compile or validate.
    Shader {
        /// The shader family (file name without `.wgsl`).
        family: &'static str,
        /// The entry point that was being built.
        entry_point: &'static str,
        /// The compiler's message.
        message: String,
    },
    /// The device ran out of memory while creating a buffer.
    OutOfMemory {
        /// Which buffer.
        tensor: String,
        /// The size that was asked for, in bytes.
        bytes: u64,
    },
    /// The device was lost (driver reset, removal, or `destroy`); nothing more can run on it.
    DeviceLost {
        /// The reason wgpu gave.
        reason: String,
    },
    /// A GPU operation failed in a way that has no variant of its own (mapping a buffer, say).
    Gpu {
        /// What was being done and wgpu's message.
        message: String,
    },
    /// Training met a NaN or Inf: the step it happened at and what was not finite. A
    /// guarded optimizer step skipped the update, so the weights are those before it.
    NonFinite {
        /// The training step.
        step: u64,
        /// `"loss"` or `"gradient norm"`.
        quantity: &'static str,
        /// The value read back.
        value: f32,
    },
    /// A tensor holds NaN or Inf where finite values are required (see
    /// [`crate::Tensor::check_finite`] and [`crate::graph::ParamStore::check_finite`]).
    NonFiniteValue {
        /// Which tensor, e.g. a parameter's state-dict name.
        tensor: String,
        /// Where the first non-finite element is, outermost index first.
        index: Vec<usize>,
        /// Its value.
        value: f32,
    },
    /// Reading or writing a file failed.
    Io(std::io::Error),
    /// A file or a byte stream is not in the expected format.
    Format {
        /// Which file or stream.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    pub(crate) fn shape(tensor: impl Into<String>, expected: impl Into<String>, found: &[usize]) -> Self {
        Error::ShapeMismatch {
            tensor: tensor.into(),
            expected: expected.into(),
            found: found.to_vec(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter { reason } => write!(f, "no GPU adapter: {reason}"),
            Error::RequestDevice { reason } => write!(f, "the adapter refused to create a device: {reason}"),
            Error::ShapeMismatch {
                tensor,
                expected,
                found,
            } => {
                write!(f, "shape mismatch for {tensor}: expected {expected}, found {found:?}")
            }
            Error::DType {
                tensor,
                expected,
                found,
            } => {
                write!(f, "dtype mismatch for {tensor}: expected {expected:?}, found {found:?}")
            }
            Error::InvalidArgument { message } => write!(f, "invalid argument: {message}"),
            Error::DeviceLimit {
                tensor,
                limit,
                needed,
                allowed,
            } => write!(f, "{tensor} needs {needed} but the device's {limit} is {allowed}"),
            Error::Shader {
                family,
                entry_point,
                message,
            } => {
                write!(f, "shader {family}.wgsl, entry point {entry_point}: {message}")
            }
            Error::OutOfMemory { tensor, bytes } => {
                write!(f, "out of GPU memory allocating {bytes} bytes for {tensor}")
            }
            Error::DeviceLost { reason } => write!(f, "the GPU device was lost: {reason}"),
            Error::Gpu { message } => write!(f, "GPU error: {message}"),
            Error::NonFinite { step, quantity, value } => write!(
                f,
                "training step {step}: the {quantity} is {value}; the step's update was skipped, the weights are those before it"
            ),
            Error::NonFiniteValue { tensor, index, value } => {
                write!(f, "{tensor} holds {value} at {index:?}")
            }
            Error::Io(err) => write!(f, "I/O error: {err}"),
            Error::Format { source_name, message } => write!(f, "{source_name}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// `Error::Io` whose message names `path`, keeping the error's kind. Not on wasm32 (no
/// file system there).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn io_error(path: &std::path::Path, err: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(err.kind(), format!("{}: {err}", path.display())))
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(err)
    }
}
