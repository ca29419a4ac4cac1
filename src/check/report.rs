//! The report of `guestreset check`: one line per check, `ok <check>: <detail>` or
//! `FAIL <check>: <detail>; fix: <one sentence>`, and a non-zero exit on any failure.

use std::fmt;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub detail: String,
    /// `None` when the check passed; the one-sentence fix when it failed.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            check: check.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn passed(&self) -> bool {
        self.fix.is_none()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line each, whatever Graph or the API server put in the detail.
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        match &self.fix {
            None => write!(f, "ok {}: {}", self.check, one_line(&self.detail)),
            Some(fix) => write!(
                f,
                "FAIL {}: {}; fix: {}",
                self.check,
                one_line(&self.detail),
                one_line(fix)
            ),
        }
    }
}

/// Every finding, in the order the checks ran.
#[derive(Debug, Default)]
pub struct Report(pub Vec<Finding>);

impl Report {
    pub fn push(&mut self, finding: Finding) {
        self.0.push(finding);
    }

    pub fn passed(&self) -> bool {
        self.0.iter().all(Finding::passed)
    }

    pub fn failures(&self) -> usize {
        self.0.iter().filter(|f| !f.passed()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.0 {
            writeln!(f, "{finding}")?;
        }
        match self.failures() {
            0 => writeln!(f, "all {} checks passed", self.0.len()),
            n => writeln!(f, "{n} of {} checks failed", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_check_with_the_fix_of_each_failure() {
        let mut report = Report::default();
        report.push(Finding::ok("token", "acquired"));
        report.push(Finding::fail(
            "namespace",
            "namespace \"identity\"\nnot found",
            "create it",
        ));
        assert!(!report.passed());
        assert_eq!(
            report.to_string(),
            "ok token: acquired\n\
             FAIL namespace: namespace \"identity\" not found; fix: create it\n\
             1 of 2 checks failed\n"
        );
    }

    #[test]
    fn a_report_of_passes_passes() {
        let report = Report(vec![Finding::ok("a", "x"), Finding::ok("b", "y")]);
        assert!(report.passed());
        assert!(report.to_string().ends_with("all 2 checks passed\n"));
    }
}
