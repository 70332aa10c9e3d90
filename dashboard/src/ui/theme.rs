//! Colours and styles. State is always spelled out in words or symbols as well, so the screen
//! reads the same without colour.

use ratatui::style::{Color, Modifier, Style};

use crate::model::Severity;

/// Colours, or none at all for `NO_COLOR`; bold and reverse are not colour and stay.
pub struct Theme {
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    pub dim: Style,
    pub title: Style,
    pub selected: Style,
}

impl Theme {
    pub fn new(color: bool) -> Self {
        let title = Style::new().add_modifier(Modifier::BOLD);
        let selected = Style::new().add_modifier(Modifier::REVERSED);
        if color {
            Self {
                ok: Style::new().fg(Color::Green),
                warn: Style::new().fg(Color::Yellow),
                bad: Style::new().fg(Color::Red),
                dim: Style::new().fg(Color::DarkGray),
                title,
                selected,
            }
        } else {
            Self {
                ok: Style::new(),
                warn: Style::new(),
                bad: Style::new(),
                dim: Style::new(),
                title,
                selected,
            }
        }
    }

    pub fn severity(&self, severity: Severity) -> (Style, &'static str) {
        match severity {
            Severity::Info => (self.ok, "·"),
            Severity::Warning => (self.warn, "!"),
            Severity::Problem => (self.bad, "✗"),
        }
    }
}
