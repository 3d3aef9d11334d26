//! Validation of the solver parameters ([`SolverParams`], defined with the other XR settings
//! in `xr/mod.rs`).

use crate::xr::SolverParams;
use crate::{Error, Result};

impl SolverParams {
    /// Checks that every field is usable: `cp, cn > 0`, `tol > 0`, `max_iter >= 1`,
    /// `bias >= 0`, `threshold >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f32, name: &str| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a finite number > 0, got {v}"
                )))
            }
        };
        let nonneg = |v: f32, name: &str| -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a finite number >= 0, got {v}"
                )))
            }
        };
        pos(self.cp, "Cp")?;
        pos(self.cn, "Cn")?;
        pos(self.tol, "tol")?;
        nonneg(self.bias, "bias")?;
        nonneg(self.threshold, "threshold")?;
        if self.max_iter == 0 {
            return Err(Error::invalid("max_iter must be >= 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_validated() {
        assert!(SolverParams::default().validate().is_ok());
        let bad = [
            SolverParams {
                cp: 0.0,
                ..Default::default()
            },
            SolverParams {
                cn: -1.0,
                ..Default::default()
            },
            SolverParams {
                tol: 0.0,
                ..Default::default()
            },
            SolverParams {
                threshold: -0.1,
                ..Default::default()
            },
            SolverParams {
                bias: f32::NAN,
                ..Default::default()
            },
            SolverParams {
                max_iter: 0,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
