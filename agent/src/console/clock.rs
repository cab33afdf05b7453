//! The time an event line shows a person: the room's wall clock, to the
//! second (`15:31:31`). Events carry RFC 3339 UTC with nanoseconds, which
//! JSON keeps; on an 80-column screen that stamp alone took 32 columns.

/// `HH:MM:SS` of `ts`, an RFC 3339 UTC stamp (`YYYY-MM-DDTHH:MM:SS...Z`),
/// shifted by `utc_offset_s`. None when `ts` is not of that form.
pub fn time_of_day(ts: &str, utc_offset_s: i32) -> Option<String> {
    let b = ts.as_bytes();
    let shape_ok = b.len() >= 20
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b.last() == Some(&b'Z')
        && [11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let two = |i: usize| i64::from(b[i] - b'0') * 10 + i64::from(b[i + 1] - b'0');
    let (h, m, s) = (two(11), two(14), two(17));
    // 60 is a leap second.
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let day = (h * 3600 + m * 60 + s.min(59) + i64::from(utc_offset_s)).rem_euclid(86_400);
    Some(format!(
        "{:02}:{:02}:{:02}",
        day / 3600,
        day / 60 % 60,
        day % 60
    ))
}

/// This host's offset from UTC now, daylight saving included, from the C
/// library's idea of the local zone (TZ, /etc/localtime); 0 (UTC) when it
/// has none.
pub fn local_utc_offset_s() -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| libc::time_t::try_from(d.as_secs()).unwrap_or(0));
    // SAFETY: libc::tm is plain integers and a pointer; all-zero is a
    // valid value of it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r writes only
    // into `tm` and is thread-safe.
    let r = unsafe { libc::localtime_r(&now, &mut tm) };
    if r.is_null() {
        0
    } else {
        i32::try_from(tm.tm_gmtoff).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_stamp_becomes_the_local_time_of_day() {
        let ts = "2026-11-23T15:31:31.568123554Z";
        assert_eq!(time_of_day(ts, 0).as_deref(), Some("15:31:31"));
        assert_eq!(time_of_day(ts, 3600).as_deref(), Some("16:31:31"));
        // Across midnight, both ways; half-hour zones.
        assert_eq!(time_of_day(ts, 9 * 3600).as_deref(), Some("00:31:31"));
        assert_eq!(
            time_of_day("2026-11-23T00:10:00Z", -3600).as_deref(),
            Some("23:10:00")
        );
        assert_eq!(
            time_of_day(ts, 5 * 3600 + 1800).as_deref(),
            Some("21:01:31")
        );
        // A leap second shows as the second before it.
        assert_eq!(
            time_of_day("2016-12-31T23:59:60Z", 0).as_deref(),
            Some("23:59:59")
        );
    }

    #[test]
    fn anything_else_is_not_a_stamp() {
        for ts in [
            "",
            "2026-11-23",
            "2026-11-23T15:31:31+01:00",
            "2026-11-23T25:31:31Z",
            "2026-11-23T15:61:31Z",
            "2026-11-23T1x:31:31Z",
            "2026-11-23 15:31:31.5Z",
            "2026-11-23T+1:31:31Z",
        ] {
            assert_eq!(time_of_day(ts, 0), None, "{ts:?}");
        }
    }

    #[test]
    fn the_local_offset_is_within_a_day() {
        assert!(local_utc_offset_s().abs() < 86_400);
    }
}
