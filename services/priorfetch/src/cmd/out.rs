//! Command output on stdout. `println!` panics when the reader has gone away
//! (`priorfetch find --json | head -1`); these writers return [`Failure::Closed`] instead,
//! and `main` then ends quietly with exit 0, as ripgrep and most Rust CLIs do.

use crate::Failure;
use std::fmt;
use std::io::Write;

/// `println!` that returns `Result<(), Failure>` instead of panicking on a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// One line on the locked stdout.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()).map_err(closed)
}

/// Text as is (it carries its own newlines).
pub fn text(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(closed)
}

/// A closed stdout is no failure for commands whose exit code is a verdict (`demo`,
/// `bench`): they finish, and the code still says whether it passed.
pub fn unless_closed(result: Result<(), Failure>) -> Result<(), Failure> {
    match result {
        Err(Failure::Closed) => Ok(()),
        other => other,
    }
}

fn closed(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Runtime(anyhow::anyhow!("cannot write to stdout: {e}"))
    }
}

/// A table whose columns are as wide as their widest cell (header included), two spaces
/// apart, trailing blanks trimmed.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().filter_map(|r| r.get(i)).chain([h]).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let render = |cells: &[String]| {
        let line: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", line.join("  ").trim_end())
    };
    std::iter::once(render(headers)).chain(rows.iter().map(|r| render(r))).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_fit_their_widest_cell() {
        let headers = vec!["PatientID".to_string(), "StudyDate".to_string()];
        let rows = vec![vec!["A-VERY-LONG-PATIENT-ID-42".to_string(), "20240101".to_string()]];
        let text = super::table(&headers, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{:<25}  StudyDate", "PatientID"));
        assert_eq!(lines[1], "A-VERY-LONG-PATIENT-ID-42  20240101");
    }
}
