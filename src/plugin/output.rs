//! How results are printed: YAML or JSON for machines, aligned columns and kubectl's way of
//! writing ages for people. Results go to stdout; notes and errors go to stderr.

use std::io::Write;

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use serde::Serialize;

use super::error::Error;

/// `-o`: the machine-readable formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

pub fn render<T: Serialize>(value: &T, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).expect("plugin values always serialise"),
        Format::Json => {
            let text = serde_json::to_string_pretty(value).expect("plugin values always serialise");
            format!("{text}\n")
        }
    }
}

/// Writes a result to stdout. A reader that went away (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Columns separated by three spaces, as kubectl aligns them.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// A duration as kubectl writes ages (`45s`, `3m10s`, `5h`, `2d4h`, `3y`): the same words in
/// the AGE column of `kubectl get` and here.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 120 {
        return format!("{}s", seconds.max(0));
    }
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86400);
    let pair = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match hours {
        _ if minutes < 10 => pair(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        0..8 => pair(hours, "h", minutes % 60, "m"),
        8..48 => format!("{hours}h"),
        48..192 => pair(days, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 => pair(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

/// A moment in UTC: the clock time when it falls on today's date, else the full date too.
pub fn clock(at: Timestamp, now: Timestamp) -> String {
    let day = |t: Timestamp| t.to_zoned(TimeZone::UTC).date();
    let format = if day(at) == day(now) {
        "%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    at.strftime(format).to_string()
}

/// When something is due: `14:03:10Z, in 2m`, or `due now` once the moment has passed.
pub fn due(at: Timestamp, now: Timestamp) -> String {
    let left = at.duration_since(now);
    if left.is_positive() {
        format!("{}, in {}", clock(at, now), human_duration(left))
    } else {
        format!("{}, due now", clock(at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn ages_read_like_kubectls() {
        let (m, h, d) = (60, 3600, 86400);
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (2 * m, "2m"),
            (3 * m + 10, "3m10s"),
            (9 * m + 59, "9m59s"),
            (10 * m + 30, "10m"),
            (179 * m, "179m"),
            (3 * h, "3h"),
            (5 * h + 30 * m, "5h30m"),
            (8 * h + 59 * m, "8h"),
            (47 * h, "47h"),
            (2 * d, "2d"),
            (2 * d + 4 * h, "2d4h"),
            (8 * d + 5 * h, "8d"),
            (729 * d, "729d"),
            (730 * d, "2y"),
            (3 * 365 * d + 12 * d, "3y12d"),
            (9 * 365 * d, "9y"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(secs(seconds)), text, "{seconds}s");
        }
    }

    #[test]
    fn due_times_say_when_and_how_long() {
        let now: Timestamp = "2026-12-02T14:01:10Z".parse().unwrap();
        let soon: Timestamp = "2026-12-02T14:03:10Z".parse().unwrap();
        assert_eq!(due(soon, now), "14:03:10Z, in 2m");
        assert_eq!(due(now, soon), "14:01:10Z, due now");
        let tomorrow: Timestamp = "2026-12-03T00:30:00Z".parse().unwrap();
        assert_eq!(due(tomorrow, now), "2026-12-03T00:30:00Z, in 10h");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = vec![
            vec!["alice".to_owned(), "Issued".to_owned(), "-".to_owned()],
            vec![
                "b".to_owned(),
                "AwaitingApproval".to_owned(),
                "x".to_owned(),
            ],
        ];
        let text = table(&["NAME", "READY", "NOTE"], &rows);
        assert_eq!(
            text,
            "NAME    READY              NOTE\n\
             alice   Issued             -\n\
             b       AwaitingApproval   x\n"
        );
    }

    #[test]
    fn both_formats_parse_back() {
        let value = serde_json::json!({"name": "a", "items": [1, 2]});
        let yaml: serde_json::Value = serde_yaml::from_str(&render(&value, Format::Yaml)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&render(&value, Format::Json)).unwrap();
        assert_eq!(yaml, value);
        assert_eq!(json, value);
    }
}
