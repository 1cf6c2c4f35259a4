//! Duration flags: `250ms`, `3s`, `2m`, `1h`, or a bare number of seconds.

use std::time::Duration;

/// A duration flag: `250ms`, `3s`, `2m`, `1h`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl DurationArg {
    pub fn ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationArg)
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (expected for example 250ms, 3s, 2m)"))?;
    let scale_ms = match unit {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    };
    let ms = value * scale_ms;
    if !ms.is_finite() || ms > 1e12 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

/// `text` as milliseconds, 0 if it does not parse (for compiled-in defaults, which do).
pub(super) fn ms_of(text: &str) -> u64 {
    parse_duration(text)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
