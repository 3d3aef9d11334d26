//! The XR-Linear model in its inference layout, and its files.
//!
//! The files, one concept each:
//! - `layout.rs`: the layout of a layer (chunks, buckets, sparse and dense rows, dense
//!   copies) and its building from [`LayerWeights`](crate::xr::LayerWeights), tuned by
//!   [`LayoutParams`];
//! - `xr_model.rs`: the model type [`XrModel`] and its accessors;
//! - `format.rs`: the file format (manifest and array file) and save, load, `to_bytes` and
//!   `from_bytes`;
//! - `verify.rs`: the structure and value checks of loads and [`XrModel::verify`].

mod format;
mod layout;
#[cfg(test)]
mod testutil;
mod verify;
mod xr_model;

pub use format::{ALT_DATA_FILE, DATA_FILE, FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE};
pub(crate) use layout::LayerRef;
pub use layout::LayoutParams;
pub use xr_model::XrModel;
