//! Times as Go's `encoding/json` writes a `time.Time`: RFC 3339 with
//! nanoseconds, trailing zeros cut. KES answers and audit lines carry them.

/// Go's `time.Time` JSON form: RFC 3339 with nanoseconds, trailing zeros cut
/// (`2024-01-31T12:00:00.1234Z`).
///
/// Every request's audit event carries one, so UTC times (all the server
/// makes) are written directly, without the `time` formatter's allocations
/// and checks; the text is the same (tested). Other offsets go through the
/// formatter, which keeps them.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let mut out = String::with_capacity(30);
    push_rfc3339(&mut out, t);
    out
}

/// Appends [`rfc3339`]`(t)` to `out`: the audit line is written this way,
/// straight into its buffer.
pub fn push_rfc3339(out: &mut String, t: time::OffsetDateTime) {
    let (year, month, day) = t.to_calendar_date();
    if !t.offset().is_utc() || !(0..=9999).contains(&year) {
        out.push_str(&t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
        return;
    }
    let (hour, minute, second, nanos) = t.to_hms_nano();
    let year = year as u32;
    out.extend([year / 1000, year / 100 % 10, year / 10 % 10, year % 10].map(|d| char::from(b'0' + d as u8)));
    let push2 = |out: &mut String, sep: char, n: u8| {
        out.push(sep);
        out.push(char::from(b'0' + n / 10));
        out.push(char::from(b'0' + n % 10));
    };
    push2(out, '-', month as u8);
    push2(out, '-', day);
    push2(out, 'T', hour);
    push2(out, ':', minute);
    push2(out, ':', second);
    push_fraction_z(out, nanos);
}

/// Appends the fraction of a second RFC 3339 carries for `nanos` (Go's
/// `RFC3339Nano`: trailing zeros cut, none at all for a whole second) and
/// the `Z` of UTC.
pub fn push_fraction_z(out: &mut String, nanos: u32) {
    if nanos != 0 {
        let mut fraction = [b'0'; 9];
        let mut n = nanos;
        for digit in fraction.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = 9 - fraction.iter().rev().take_while(|&&d| d == b'0').count();
        out.push('.');
        out.extend(fraction[..len].iter().map(|&d| char::from(d)));
    }
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_nanos: i128) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos).unwrap()
    }

    /// The time is the text `time`'s RFC 3339 formatter writes (Go's
    /// `RFC3339Nano` in UTC), across the fraction lengths and the calendar.
    #[test]
    fn rfc3339_matches_the_time_formatter() {
        let reference = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
        let mut t: i128 = 0;
        for step in [1i128, 7, 10, 100, 1_000, 123_456, 1_000_000_000, 86_399_999_999_999, 31_556_952_000_000_017] {
            for _ in 0..200 {
                t = t.wrapping_add(step * 7919) % 253_402_300_799_000_000_000;
                assert_eq!(rfc3339(at(t)), reference(at(t)));
            }
        }
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(1_500)), "1970-01-01T00:00:00.0000015Z");
        assert_eq!(rfc3339(at(253_402_300_799_999_999_999)), "9999-12-31T23:59:59.999999999Z");
        // Another offset is kept, as Go keeps it.
        let offset = at(1_704_067_200_500_000_000).to_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap());
        assert_eq!(rfc3339(offset), "2024-01-01T05:30:00.5+05:30");
    }
}
