//! How the workspace prints durations, latencies and sizes, so a figure reads the same in the
//! dashboard and in `userctl bench`.

use std::time::Duration;

/// `250ms`, `45s`, `12m05s`, `3h02m`, `2d04h`: two units at most, for narrow columns
/// (uptimes, refresh intervals, spans of history).
pub fn duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 if duration.subsec_millis() > 0 => format!("{}ms", duration.subsec_millis()),
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// A request's latency: `412 µs` below a millisecond, `1.8 ms` from there on.
pub fn latency(latency: Duration) -> String {
    let us = latency.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// `hh:mm:ss` of a time since some start (hours keep counting past a day).
pub fn clock(at: Duration) -> String {
    let secs = at.as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A ratio in 0..=1 as a percentage with one decimal: `97.3%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// A memory size in MiB, or GiB from one GiB on.
pub fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= 1024.0 * MIB {
        format!("{:.1} GiB", n / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(60)), "1m00s");
        assert_eq!(duration(Duration::from_secs(725)), "12m05s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(duration(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d04h");
    }

    #[test]
    fn sub_second_parts_of_longer_durations_are_dropped() {
        assert_eq!(duration(Duration::from_millis(45_900)), "45s");
    }

    #[test]
    fn latencies_switch_to_milliseconds_at_one() {
        assert_eq!(latency(Duration::ZERO), "0 µs");
        assert_eq!(latency(Duration::from_micros(412)), "412 µs");
        assert_eq!(latency(Duration::from_micros(999)), "999 µs");
        assert_eq!(latency(Duration::from_micros(1000)), "1.0 ms");
        assert_eq!(latency(Duration::from_micros(1830)), "1.8 ms");
        assert_eq!(latency(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(latency(Duration::from_secs(2)), "2000.0 ms");
    }

    #[test]
    fn clocks_count_hours_past_a_day() {
        assert_eq!(clock(Duration::ZERO), "00:00:00");
        assert_eq!(clock(Duration::from_secs(3725)), "01:02:05");
        assert_eq!(clock(Duration::from_secs(100 * 3600)), "100:00:00");
    }

    #[test]
    fn percents_and_sizes() {
        assert_eq!(percent(0.973), "97.3%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
