//! xmrrs-core: the pure-Rust heart of xmrrs (no Python types here).
//!
//! - [`sparse`]: CSR/CSC matrices (u32 indices, f32 values, 64-bit indptr), validation and
//!   multithreaded kernels (transpose, row normalisation, products, gathers, top-k).
//! - [`dense`]: the dense feature block beside a CSR matrix (hybrid inputs).
//! - [`io`]: the Extreme Classification Repository and LIBSVM multilabel text formats.
//! - [`simd`]: runtime-dispatched dense kernels (AVX2/FMA on x86-64, portable fallback).
//! - [`parallel`]: thread-pool selection from an sklearn-style `n_jobs`.
//! - [`text`]: raw text to tf-idf vectors (equal to scikit-learn's `TfidfVectorizer`).
//! - [`alloc`]: fallible allocation of buffers sized by input ([`Error::Memory`], not an abort).
//!
//! Every public entry point that sees user data returns [`Result`]; none panics on bad input.

pub mod alloc;
pub mod cluster;
pub mod dense;
pub mod error;
pub mod half;
pub mod io;
pub mod parallel;
pub mod simd;
pub mod sparse;
pub mod text;
pub mod xr;

pub use error::{Error, Result};
