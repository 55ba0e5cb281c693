//! Duration values of flags and environment variables.

use std::time::Duration;

/// Parses a duration in `humantime` syntax (`30s`, `500ms`, `2m`, `1h`,
/// `1.5s`, `1m 30s`) or a bare number of seconds (`1.5`). Units of a day or
/// longer are refused: no wasmbox duration is meant to be that long.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unknown = |u: &str| format!("unknown unit '{u}' in '{s}' (use ms, s, m or h)");
    let bare = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let spelled = if bare { format!("{s}s") } else { s.to_string() };
    let d = humantime::parse_duration(&spelled).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => unknown(&unit),
        _ => format!("'{s}' is not a duration like 30s or 500ms"),
    })?;
    // humantime also knows days, weeks, months and years.
    let day = Duration::from_secs(86_400);
    if let Some(u) = s
        .split(|c: char| !c.is_alphabetic())
        .find(|u| humantime::parse_duration(&format!("1{u}")).is_ok_and(|d| d >= day))
    {
        return Err(unknown(u));
    }
    if d.is_zero() || d.as_secs() >= 1_000_000_000 {
        return Err(format!("'{s}' must be positive"));
    }
    Ok(d)
}

/// [`parse_duration`], also accepting zero (`0`, `0s`) to turn a wait off.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_where_a_wait_can_be_off() {
        assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration_or_zero("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration_or_zero("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_duration_or_zero("soon").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(
            parse_duration(" 1.5s ").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("5y").unwrap_err(),
            "unknown unit 'y' in '5y' (use ms, s, m or h)"
        );
        assert_eq!(
            parse_duration("2 days").unwrap_err(),
            "unknown unit 'days' in '2 days' (use ms, s, m or h)"
        );
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            "unknown unit 'x' in '5x' (use ms, s, m or h)"
        );
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
        assert!(parse_duration("2000000000s")
            .unwrap_err()
            .contains("must be positive"));
    }
}
