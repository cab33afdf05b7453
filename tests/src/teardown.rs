//! Teardown that keeps going: every step runs, every failure is reported.

use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct TeardownError {
    pub step: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// All failures of one teardown, in the order they happened.
#[derive(Debug, Default)]
pub struct TeardownErrors(pub Vec<TeardownError>);

impl TeardownErrors {
    /// Records the outcome of one step and carries on.
    pub fn step<T, E>(&mut self, step: impl Into<String>, result: Result<T, E>) -> Option<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(TeardownError {
                    step: step.into(),
                    source: Box::new(e),
                });
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), TeardownErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for TeardownErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} teardown step(s) failed:", self.0.len())?;
        for e in &self.0 {
            write!(f, "  - {}", e.step)?;
            let mut src: Option<&dyn std::error::Error> = Some(e.source.as_ref());
            while let Some(s) = src {
                write!(f, ": {s}")?;
                src = s.source();
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for TeardownErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_failure_in_order() {
        let mut errs = TeardownErrors::default();
        let a: Result<(), std::io::Error> = Err(std::io::Error::other("first"));
        let b: Result<u8, std::io::Error> = Ok(3);
        let c: Result<(), std::io::Error> = Err(std::io::Error::other("second"));
        assert!(errs.step("a", a).is_none());
        assert_eq!(errs.step("b", b), Some(3));
        errs.step("c", c);
        let text = errs.to_string();
        assert!(text.contains("2 teardown step(s) failed"));
        assert!(text.find("a: first").unwrap() < text.find("c: second").unwrap());
        assert!(errs.into_result().is_err());
    }
}
