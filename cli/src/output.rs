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
}
