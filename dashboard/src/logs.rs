//! The logs pane's data: the lines of one service or of the whole stack merged in time order,
//! each with the absolute time it was logged, its source and its level; and the filter the user
//! typed. No I/O.
//!
//! Each program stamps its lines its own way; the three the stack runs are read here:
//!
//! - `usersvc`: RFC 3339 UTC, `2026-12-02T20:40:18.186574Z  INFO …` (or a JSON line with a
//!   `"timestamp"` under `--log-format json`);
//! - Postgres: `2026-12-02 20:40:18.186 UTC [1] LOG: …`;
//! - Redis: `1:M 02 Dec 2026 20:40:18.186 * …`.
//!
//! A line with no stamp (a continuation, HAProxy's) keeps the time of the line before it from
//! the same source, so it stays beside it once merged.

use std::ops::Range;

use regex::Regex;

use crate::source::{LogLine, Service, label};

/// How bad a line says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    /// Says nothing, or in words not known here.
    Unknown,
}

/// One line of the pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When, as `YYYY-MM-DDTHH:MM:SS.fff…`, sortable as text; empty before a source's first
    /// stamped line.
    at: String,
    /// `HH:MM:SS.mmm`, as logged (UTC for every program of the stack); `None` when unstamped.
    pub time: Option<String>,
    /// `cache`, or `cache.2` when the service has several replicas.
    pub source: String,
    pub level: Level,
    /// The line without its stamp.
    pub text: String,
}

impl Entry {
    /// What the filter looks at: the source and the text, so `cache` or `store.*ERROR` work.
    pub fn searchable(&self) -> String {
        format!("{} {}", self.source, self.text)
    }
}

/// Merges several services' lines into one list in time order (stable: lines logged in the
/// same instant keep their source order, and a source's own lines keep theirs).
pub fn merge(batches: Vec<(Service, Vec<LogLine>)>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = batches
        .into_iter()
        .flat_map(|(service, lines)| {
            let mut carried = String::new();
            lines.into_iter().map(move |line| {
                let source = label(service, line.replica.unwrap_or(1), line.replica.is_some());
                let entry = entry(source, &line.text, &carried);
                carried.clone_from(&entry.at);
                entry
            })
        })
        .collect();
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    entries
}

fn entry(source: String, line: &str, carried: &str) -> Entry {
    let line = line.trim_end();
    let (stamp, text) = match stamp(line) {
        Some((at, text)) => (Some(at), text),
        None => (None, line),
    };
    Entry {
        time: stamp
            .as_ref()
            .map(|at| at.get(11..23).unwrap_or(&at[11..]).to_owned()),
        at: stamp.unwrap_or_else(|| carried.to_owned()),
        source,
        level: level(text),
        text: message_first(text.trim_start()),
    }
}

/// `INFO answered code=OK · request{trace_id=… rpc=…}` for `usersvc`'s
/// `INFO request{trace_id=… rpc=…}: answered code=OK`: what happened before where, so a
/// narrow pane shows the news; the trace id stays on the line, to filter by.
fn message_first(text: &str) -> String {
    let moved = text.split_once(' ').and_then(|(level, rest)| {
        let rest = rest.trim_start();
        let (spans, message) = rest.split_once("}: ")?;
        let is_span = spans.split_once('{').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'}')
        });
        is_span.then(|| format!("{level} {message} · {spans}}}"))
    });
    moved.unwrap_or_else(|| text.to_owned())
}

/// The line's time as `YYYY-MM-DDTHH:MM:SS.fff…`, and the rest of the line.
fn stamp(line: &str) -> Option<(String, &str)> {
    if line.starts_with('{') {
        let (_, rest) = line.split_once("\"timestamp\":\"")?;
        let (at, _) = rest.split_once('"')?;
        return is_iso(at).then(|| (at.trim_end_matches('Z').to_owned(), line));
    }
    let (first, rest) = line.split_once(' ')?;
    // usersvc
    if is_iso(first) && first.ends_with('Z') {
        return Some((first.trim_end_matches('Z').to_owned(), rest));
    }
    // Postgres: date, time, zone
    if is_date(first) {
        let mut words = rest.splitn(3, ' ');
        let (time, _zone, rest) = (words.next()?, words.next()?, words.next()?);
        return is_time(time).then(|| (format!("{first}T{time}"), rest));
    }
    // Redis: pid:role, day, month, year, time
    let mut words = rest.splitn(5, ' ');
    let (day, month, year, time, rest) = (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next().unwrap_or(""),
    );
    let month = month_number(month)?;
    let valid = first.contains(':')
        && day.len() == 2
        && day.bytes().all(|byte| byte.is_ascii_digit())
        && year.len() == 4
        && is_time(time);
    valid.then(|| (format!("{year}-{month:02}-{day}T{time}"), rest))
}

fn is_iso(text: &str) -> bool {
    text.len() >= 19
        && is_date(&text[..10])
        && text.as_bytes()[10] == b'T'
        && is_time(&text[11..19])
}

/// `YYYY-MM-DD`
fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, byte)| match i {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// `HH:MM:SS`, then perhaps a fraction.
fn is_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 8
        && bytes.iter().enumerate().all(|(i, byte)| match i {
            2 | 5 => *byte == b':',
            8 => *byte == b'.',
            _ => byte.is_ascii_digit(),
        })
}

fn month_number(name: &str) -> Option<u8> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS
        .iter()
        .position(|month| *month == name)
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// The level a line names in its first words: `usersvc`'s `INFO`, Postgres's `LOG:`/`ERROR:`,
/// a JSON line's `"level"`.
fn level(text: &str) -> Level {
    if let Some((_, rest)) = text.split_once("\"level\":\"") {
        return level_word(rest.split('"').next().unwrap_or(""));
    }
    text.split_whitespace()
        .take(3)
        .map(|word| level_word(word.trim_end_matches(':')))
        .find(|level| *level != Level::Unknown)
        .unwrap_or(Level::Unknown)
}

fn level_word(word: &str) -> Level {
    match word {
        "ERROR" | "FATAL" | "PANIC" => Level::Error,
        "WARN" | "WARNING" => Level::Warn,
        "INFO" | "LOG" | "NOTICE" => Level::Info,
        "DEBUG" | "TRACE" => Level::Debug,
        _ => Level::Unknown,
    }
}

/// What the user typed after `/`: a regular expression (plain words are one), matched without
/// regard to case unless it has a capital letter.
#[derive(Debug, Clone, Default)]
pub enum Filter {
    #[default]
    Off,
    On {
        query: String,
        regex: Regex,
    },
    /// Not a regular expression: shown with why, and nothing is filtered.
    Invalid {
        query: String,
        error: String,
    },
}

impl Filter {
    pub fn new(query: &str) -> Self {
        if query.is_empty() {
            return Self::Off;
        }
        let case_blind = !query.chars().any(char::is_uppercase);
        match regex::RegexBuilder::new(query)
            .case_insensitive(case_blind)
            .size_limit(1 << 20)
            .build()
        {
            Ok(regex) => Self::On {
                query: query.to_owned(),
                regex,
            },
            Err(err) => Self::Invalid {
                query: query.to_owned(),
                error: short_error(&err),
            },
        }
    }

    pub fn query(&self) -> &str {
        match self {
            Self::Off => "",
            Self::On { query, .. } | Self::Invalid { query, .. } => query,
        }
    }

    pub fn matches(&self, entry: &Entry) -> bool {
        match self {
            Self::On { regex, .. } => regex.is_match(&entry.searchable()),
            Self::Off | Self::Invalid { .. } => true,
        }
    }

    /// Where it matches in `text`, to highlight.
    pub fn spans(&self, text: &str) -> Vec<Range<usize>> {
        match self {
            Self::On { regex, .. } => regex
                .find_iter(text)
                .map(|found| found.range())
                .filter(|range| !range.is_empty())
                .collect(),
            Self::Off | Self::Invalid { .. } => Vec::new(),
        }
    }
}

/// The regex crate explains an error over several lines with a caret under the spot; the last
/// line says what is wrong.
fn short_error(err: &regex::Error) -> String {
    let text = err.to_string();
    let last = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("not a regular expression");
    last.trim().trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            replica: None,
            text: text.to_owned(),
        }
    }

    #[test]
    fn each_programs_stamp_is_read_as_an_absolute_time() {
        let usersvc = entry(
            "cache".into(),
            "2026-12-02T20:40:18.186574Z  INFO request{trace_id=4bf9}: answered code=OK",
            "",
        );
        assert_eq!(usersvc.time.as_deref(), Some("20:40:18.186"));
        assert_eq!(usersvc.level, Level::Info);
        assert_eq!(
            usersvc.text,
            "INFO answered code=OK · request{trace_id=4bf9}"
        );

        let postgres = entry(
            "postgres".into(),
            "2026-12-02 20:40:19.001 UTC [1] ERROR:  relation does not exist",
            "",
        );
        assert_eq!(postgres.time.as_deref(), Some("20:40:19.001"));
        assert_eq!(postgres.level, Level::Error);
        assert_eq!(postgres.text, "[1] ERROR:  relation does not exist");

        let redis = entry(
            "redis".into(),
            "1:M 02 Dec 2026 20:40:17.500 * Ready to accept connections tcp",
            "",
        );
        assert_eq!(redis.time.as_deref(), Some("20:40:17.500"));
        assert_eq!(redis.text, "* Ready to accept connections tcp");

        let json = entry(
            "gateway".into(),
            r#"{"timestamp":"2026-12-02T20:40:18.2Z","level":"WARN","fields":{}}"#,
            "",
        );
        assert_eq!(json.level, Level::Warn);
        assert_eq!(json.time.as_deref(), Some("20:40:18.2"));

        let plain = entry("proxy".into(), "[NOTICE] loading", "2026-12-02T20:40:18");
        assert_eq!(plain.time, None);
        assert_eq!(plain.at, "2026-12-02T20:40:18");
    }

    #[test]
    fn the_stacks_lines_merge_in_time_order_and_unstamped_lines_stay_with_theirs() {
        let merged = merge(vec![
            (
                Service::Gateway,
                vec![
                    line("2026-12-02T20:40:18.300000Z  INFO answered"),
                    line("2026-12-02T20:40:18.100000Z  INFO early"),
                ],
            ),
            (
                Service::Redis,
                vec![
                    line("1:M 02 Dec 2026 20:40:18.200 * saved"),
                    line("    a continuation"),
                ],
            ),
            (
                Service::Cache,
                vec![LogLine {
                    replica: Some(2),
                    text: "2026-12-02T20:40:18.250000Z  WARN slow".into(),
                }],
            ),
        ]);
        let order: Vec<(&str, &str)> = merged
            .iter()
            .map(|entry| (entry.source.as_str(), entry.text.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("gateway", "INFO early"),
                ("redis", "* saved"),
                ("redis", "a continuation"),
                ("cache.2", "WARN slow"),
                ("gateway", "INFO answered"),
            ]
        );
    }

    #[test]
    fn a_filter_is_a_case_blind_regex_unless_it_has_capitals() {
        let entry = entry(
            "store".into(),
            "2026-12-02T20:40:18.186574Z ERROR request: answered code=Internal",
            "",
        );
        assert!(Filter::new("internal").matches(&entry));
        assert!(!Filter::new("Internally").matches(&entry));
        assert!(Filter::new("^store .*ERROR").matches(&entry));
        assert!(!Filter::new("cache").matches(&entry));
        assert_eq!(Filter::new("code").spans("code=1 code=2"), [0..4, 7..11]);

        let Filter::Invalid { error, .. } = Filter::new("answered(") else {
            panic!("an unclosed group is no regex");
        };
        assert_eq!(error, "unclosed group");
        assert!(
            Filter::new("answered(").matches(&entry),
            "an invalid filter hides nothing"
        );
        assert!(matches!(Filter::new(""), Filter::Off));
    }
}
