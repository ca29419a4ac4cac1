//! The one table the benchmark prints: Markdown, so it can go into docs/performance.md as is.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A figure without a target.
    Info,
    Met,
    /// A performance target missed: reported, the run still succeeds.
    Missed,
    /// A correctness check failed (wrong number of invitations, a bench that could not run).
    Fail,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Info => "",
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Fail => "**FAIL**",
        }
    }
}

pub struct Row {
    pub bench: String,
    pub measure: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn info(&mut self, bench: &str, measure: impl Into<String>, value: impl Into<String>) {
        self.push(bench, measure, value, "", Verdict::Info);
    }

    /// A figure with a performance target.
    pub fn target(
        &mut self,
        bench: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        let verdict = if met { Verdict::Met } else { Verdict::Missed };
        self.push(bench, measure, value, target, verdict);
    }

    /// A correctness check: a failure makes the run fail.
    pub fn check(
        &mut self,
        bench: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
        ok: bool,
    ) {
        let verdict = if ok { Verdict::Met } else { Verdict::Fail };
        self.push(bench, measure, value, expected, verdict);
    }

    pub fn fail(&mut self, bench: &str, what: impl Into<String>) {
        self.push(bench, "did not complete", what, "", Verdict::Fail);
    }

    fn push(
        &mut self,
        bench: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        let row = Row {
            bench: bench.to_owned(),
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
            verdict,
        };
        eprintln!(
            "  {} | {} | {} | {} | {}",
            row.bench,
            row.measure,
            row.value,
            row.target,
            row.verdict.text()
        );
        self.rows.push(row);
    }

    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.verdict == Verdict::Fail)
    }

    pub fn render(&self, header: &[String]) -> String {
        let mut out = String::new();
        for line in header {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "| bench | measure | value | target | result |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for row in &self.rows {
            let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&row.bench),
                cell(&row.measure),
                cell(&row.value),
                cell(&row.target),
                row.verdict.text()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_run_and_a_missed_target_does_not() {
        let mut table = Table::default();
        table.target("B2", "idle", "25 MiB", "≤ 20 MiB", false);
        assert!(!table.failed());
        table.check("B1", "POSTs", "999", "= 1000", false);
        assert!(table.failed());
        let text = table.render(&["# header".into()]);
        assert!(text.contains("| B1 | POSTs | 999 | = 1000 | **FAIL** |"));
        assert!(text.contains("| B2 | idle | 25 MiB | ≤ 20 MiB | MISSED |"));
    }

    #[test]
    fn pipes_in_cells_are_escaped() {
        let mut table = Table::default();
        table.info("B1", "a|b", "c");
        assert!(table.render(&[]).contains("a\\|b"));
    }
}
