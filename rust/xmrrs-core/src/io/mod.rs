//! Text formats of the field.

pub mod xc;
