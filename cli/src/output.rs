//! Human output: aligned tables and, on a terminal without `NO_COLOR`, a little colour.

use std::io::IsTerminal as _;

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible_len(cell));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| {
                format!(
                    "{cell}{}",
                    " ".repeat(width.saturating_sub(visible_len(cell)))
                )
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub enum Color {
    Green,
    Yellow,
    Red,
}

/// `text` in `color` when stdout is a terminal and `NO_COLOR` is unset.
pub fn paint(text: &str, color: Color) -> String {
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
        || !std::io::stdout().is_terminal()
    {
        return text.to_owned();
    }
    let code = match color {
        Color::Green => 32,
        Color::Yellow => 33,
        Color::Red => 31,
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Length without ANSI colour sequences.
fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// Characters a terminal acts on instead of showing: controls (C0, DEL, C1 such as the 8-bit
/// CSI), line and paragraph separators, and bidi embeddings, overrides and isolates, which
/// reorder whatever is printed after them. Text from a server passes through
/// [`printable`] or [`printable_json`] so it can never drive the user's terminal.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unprintable character written as `\u{…}`.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Serialised JSON with every unprintable character left raw by the serialiser written as a
/// `\uXXXX` escape: the value a script decodes is unchanged. They can only occur inside strings,
/// and all are in the Basic Multilingual Plane, so one escape each is valid JSON.
pub fn printable_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unprintable(c) && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn timestamp(secs: i64) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["gateway".into(), "running".into()],
            vec!["redis".into(), "\x1b[31mexited\x1b[0m".into()],
        ];
        let text = table(&["service", "state"], &rows);
        assert_eq!(
            text,
            "SERVICE  STATE\ngateway  running\nredis    \x1b[31mexited\x1b[0m\n"
        );
    }

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        assert_eq!(
            printable("Ann\x1b[2J\u{9b}31m\u{202E}Lee\u{7f}\n"),
            "Ann\\u{1b}[2J\\u{9b}31m\\u{202e}Lee\\u{7f}\\u{a}"
        );
        assert_eq!(printable("Zoë 李 👩\u{200D}💻"), "Zoë 李 👩\u{200D}💻");
    }

    #[test]
    fn printable_json_decodes_to_the_same_value() {
        let name = "Ann\x1b[2J\u{9b}\u{202E}\u{2028}Lee";
        let json = printable_json(
            &serde_json::to_string_pretty(&serde_json::json!({ "n": name })).expect("json"),
        );
        assert!(
            !json.chars().any(|c| is_unprintable(c) && c != '\n'),
            "{json:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back["n"], name);
    }
}
