//! The hit ratio over the recent past, one bar per refresh.

use std::time::Duration;

use ratatui::{
    buffer::Buffer,
    layout::Rect,
    widgets::{Block, Sparkline, SparklineBar, Widget},
};

use super::theme::Theme;
use crate::{
    format,
    model::{CacheView, RATIO_SCALE},
};

pub fn render(cache: &CacheView, refresh: Duration, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let bars = usize::from(area.width.saturating_sub(2));
    let skip = cache.history.len().saturating_sub(bars);
    let shown: Vec<Option<u64>> = cache.history.iter().skip(skip).copied().collect();
    let span = refresh.saturating_mul(u32::try_from(shown.len()).unwrap_or(u32::MAX));
    let block = Block::bordered().title(format!(" Hit ratio, last {} ", format::duration(span)));
    // A ratio of 0% still gets the lowest visible bar, so it differs from an interval with no
    // reads (blank); colour says how good each ratio is.
    let floor = RATIO_SCALE.div_ceil(u64::from(area.height.saturating_sub(2)).max(1) * 8);
    let bars = shown.into_iter().map(|point| {
        let bar = SparklineBar::from(point.map(|p| p.max(floor)));
        match point {
            Some(p) if p >= RATIO_SCALE * 9 / 10 => bar.style(theme.ok),
            Some(p) if p >= RATIO_SCALE / 2 => bar.style(theme.warn),
            Some(_) => bar.style(theme.bad),
            None => bar,
        }
    });
    Sparkline::default()
        .block(block)
        .data(bars)
        .max(RATIO_SCALE)
        .render(area, buf);
}
