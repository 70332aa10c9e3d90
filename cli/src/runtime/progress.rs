//! Progress of `up`, one line per service: spinners on a terminal, plain lines otherwise (CI
//! logs, pipes).

use std::{io::IsTerminal as _, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stack::Service;

pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    pub fn new() -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bars =
            interactive.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { bars }
    }

    /// A line for `service`, updated as it moves through its phases.
    pub fn service(&self, service: Service) -> ServiceProgress {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix:<9} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(service.name());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        ServiceProgress { service, bar }
    }

    /// A line that is not about one service.
    pub fn note(&self, message: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(message);
            }
            None => eprintln!("{message}"),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

pub struct ServiceProgress {
    service: Service,
    bar: Option<ProgressBar>,
}

impl ServiceProgress {
    /// The current phase: "building image", "starting", "waiting for health"…
    pub fn phase(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!("{:<9} {message}", self.service.name()),
        }
    }

    /// The final word on this service: "healthy", "unchanged"…
    pub fn done(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("✔ {message}")),
            None => eprintln!("{:<9} {message}", self.service.name()),
        }
    }

    /// A line about this service that stays, above the moving ones.
    pub fn note(&self, message: &str) {
        let line = format!("{:<9} {message}", self.service.name());
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn fail(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.abandon_with_message(format!("✘ {message}")),
            None => eprintln!("{:<9} {message}", self.service.name()),
        }
    }
}

impl Drop for ServiceProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}
