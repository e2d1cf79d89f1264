//! `heapdump verify`: the format's semantic rules, as problems.

use std::fmt;

use heapdump_formats::read::DumpView;
use heapdump_formats::verify::verify;
use serde::Serialize;

/// `heapdump verify`: the semantic problems of a dump.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The dump file.
    pub file: String,
    /// Number of problems listed.
    pub problem_count: usize,
    /// Each problem.
    pub problems: Vec<ProblemInfo>,
}

/// One broken rule of FORMAT.md section 10.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemInfo {
    /// Rule name, such as `allocations.overlap`.
    pub check: String,
    /// Section name.
    pub section: String,
    /// Record index, when the problem is one record's.
    pub index: Option<u64>,
    /// Byte offset in the file.
    pub offset: u64,
    /// The problem, as a sentence.
    pub message: String,
}

impl VerifyReport {
    /// `heapdump verify`: runs the format's semantic checks over `view`,
    /// read from `file`.
    pub fn build(view: &DumpView<'_>, file: &str) -> Self {
        let problems: Vec<ProblemInfo> = verify(view)
            .into_iter()
            .map(|p| ProblemInfo {
                check: p.check.to_owned(),
                section: p.section.to_string(),
                index: p.index,
                offset: p.offset,
                message: p.to_string(),
            })
            .collect();
        VerifyReport {
            file: file.to_owned(),
            problem_count: problems.len(),
            problems,
        }
    }
}

/// The report as text: one problem a line, then a summary.
impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{}: {}", p.check, p.message)?;
        }
        if self.problems.is_empty() {
            writeln!(f, "{}: ok, no problems", self.file)?;
        } else {
            writeln!(
                f,
                "{}: {} problem{}",
                self.file,
                self.problem_count,
                if self.problem_count == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}
