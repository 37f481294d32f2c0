//! The calendar behind PromQL's date functions (`year`, `month`, `day_of_month`, `day_of_week`,
//! `day_of_year`, `hour`, `minute`, `days_in_month`), computed as Prometheus 2.42 computes it:
//! with Go 1.19's `time` package, in UTC.
//!
//! Go counts time as unsigned seconds since an "absolute zero" year long before year 1, and
//! wraps around on overflow; the conversion from a sample value to seconds is Go's `int64(v)`
//! on amd64, which turns NaN, ±Inf and anything beyond ±2⁶³ into `i64::MIN`. Doing the same here
//! makes even those answers Prometheus' (`year(vector(NaN))` is 292277026596).

/// One of PromQL's date functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatePart {
    Year,
    Month,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    Hour,
    Minute,
    DaysInMonth,
}

impl DatePart {
    /// The date function called `name`, if it is one.
    pub(crate) fn from_function(name: &str) -> Option<DatePart> {
        Some(match name {
            "year" => DatePart::Year,
            "month" => DatePart::Month,
            "day_of_month" => DatePart::DayOfMonth,
            "day_of_week" => DatePart::DayOfWeek,
            "day_of_year" => DatePart::DayOfYear,
            "hour" => DatePart::Hour,
            "minute" => DatePart::Minute,
            "days_in_month" => DatePart::DaysInMonth,
            _ => return None,
        })
    }

    /// This part of the UTC time `unix_seconds` seconds after 1970-01-01 (months and days
    /// counted from 1, weekdays from Sunday = 0).
    pub(crate) fn of(self, unix_seconds: i64) -> f64 {
        let abs = absolute(unix_seconds);
        let date = || civil_date(abs);
        match self {
            DatePart::Year => date().year as f64,
            DatePart::Month => f64::from(date().month),
            DatePart::DayOfMonth => f64::from(date().day),
            DatePart::DayOfYear => f64::from(date().year_day + 1),
            DatePart::DayOfWeek => {
                // Day zero of the absolute calendar is a Monday.
                (abs.wrapping_add(SECONDS_PER_DAY) % (7 * SECONDS_PER_DAY) / SECONDS_PER_DAY) as f64
            }
            DatePart::Hour => (abs % SECONDS_PER_DAY / 3600) as f64,
            DatePart::Minute => (abs % 3600 / 60) as f64,
            DatePart::DaysInMonth => {
                // Prometheus asks Go for day 32 of the month, which normalises into the next
                // month: 32 minus that day is the month's length.
                let d = date();
                let next = civil_date(date_to_absolute(d.year, d.month, 32));
                f64::from(32 - next.day)
            }
        }
    }
}

/// Go's `int64(v)` on amd64 (`CVTTSD2SQ`): truncation toward zero, and `i64::MIN` for NaN, the
/// infinities and everything outside the range of `i64`.
pub(crate) fn go_seconds(v: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if v.is_nan() || !(-LIMIT..LIMIT).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

const SECONDS_PER_DAY: u64 = 86_400;
const DAYS_PER_400_YEARS: u64 = 365 * 400 + 97;
const DAYS_PER_100_YEARS: u64 = 365 * 100 + 24;
const DAYS_PER_4_YEARS: u64 = 365 * 4 + 1;
/// Go's `absoluteZeroYear`: 1 mod 400, so that the calendar's cycles start on it.
const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
/// Go's `unixToInternal + internalToAbsolute`: seconds from the absolute zero to 1970.
const UNIX_TO_ABSOLUTE: u64 = 9_223_372_028_715_321_600;
/// Days before each month in a common year; the last entry is the year's length.
const DAYS_BEFORE: [u32; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];

fn absolute(unix_seconds: i64) -> u64 {
    (unix_seconds as u64).wrapping_add(UNIX_TO_ABSOLUTE)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

struct CivilDate {
    year: i64,
    month: u32,
    day: u32,
    /// Days since January 1st (0-based).
    year_day: u32,
}

/// The date of an absolute time (Go's `absDate`).
fn civil_date(abs: u64) -> CivilDate {
    let mut d = abs / SECONDS_PER_DAY;
    let mut n = d / DAYS_PER_400_YEARS;
    let mut y = 400 * n;
    d -= DAYS_PER_400_YEARS * n;
    // A 400-year cycle's last 100-year cycle is a day longer: its last day would count as a
    // fifth cycle.
    n = d / DAYS_PER_100_YEARS;
    n -= n >> 2;
    y += 100 * n;
    d -= DAYS_PER_100_YEARS * n;
    n = d / DAYS_PER_4_YEARS;
    y += 4 * n;
    d -= DAYS_PER_4_YEARS * n;
    // Likewise the last day of a 4-year cycle's leap year.
    n = d / 365;
    n -= n >> 2;
    y += n;
    d -= 365 * n;

    let year = (y as i64).wrapping_add(ABSOLUTE_ZERO_YEAR);
    let year_day = d as u32; // < 366
    let mut day = year_day;
    if is_leap(year) {
        if day == 31 + 29 - 1 {
            return CivilDate {
                year,
                month: 2,
                day: 29,
                year_day,
            };
        }
        if day > 31 + 29 - 1 {
            day -= 1;
        }
    }
    // Every month is at most 31 days long, so day / 31 is the month or the one before it.
    let mut month = day / 31;
    let end = DAYS_BEFORE[month as usize + 1];
    let begin = if day >= end {
        month += 1;
        end
    } else {
        DAYS_BEFORE[month as usize]
    };
    CivilDate {
        year,
        month: month + 1,
        day: day - begin + 1,
        year_day,
    }
}

/// The absolute time of midnight on `day` (which may run past the month's end) of `month`
/// (1-12) in `year`, as Go's `time.Date` computes it in UTC.
fn date_to_absolute(year: i64, month: u32, day: u32) -> u64 {
    let mut y = year.wrapping_sub(ABSOLUTE_ZERO_YEAR) as u64;
    let mut n = y / 400;
    y -= 400 * n;
    let mut d = DAYS_PER_400_YEARS.wrapping_mul(n);
    n = y / 100;
    y -= 100 * n;
    d = d.wrapping_add(DAYS_PER_100_YEARS * n);
    n = y / 4;
    y -= 4 * n;
    d = d.wrapping_add(DAYS_PER_4_YEARS * n);
    d = d.wrapping_add(365 * y);
    d = d.wrapping_add(u64::from(DAYS_BEFORE[month as usize - 1]));
    if is_leap(year) && month >= 3 {
        d = d.wrapping_add(1);
    }
    d = d.wrapping_add(u64::from(day) - 1);
    d.wrapping_mul(SECONDS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(unix seconds, [year, month, day, weekday, year day, hour, minute, days in month])`,
    /// as Prometheus 2.42 answered them.
    #[test]
    fn parts_of_known_instants() {
        for (secs, expect) in [
            (0, [1970i64, 1, 1, 4, 1, 0, 0, 31]),
            (-1, [1969, 12, 31, 3, 365, 23, 59, 31]),
            (1_709_251_199, [2024, 2, 29, 4, 60, 23, 59, 29]),
            (4_107_542_399, [2100, 2, 28, 0, 59, 23, 59, 28]),
            (-62_135_596_801, [0, 12, 31, 0, 366, 23, 59, 31]),
            (i64::MIN, [292_277_026_596, 12, 4, 0, 339, 15, 30, 31]),
        ] {
            let parts = [
                DatePart::Year,
                DatePart::Month,
                DatePart::DayOfMonth,
                DatePart::DayOfWeek,
                DatePart::DayOfYear,
                DatePart::Hour,
                DatePart::Minute,
                DatePart::DaysInMonth,
            ];
            let got: Vec<f64> = parts.iter().map(|p| p.of(secs)).collect();
            let expect: Vec<f64> = expect.iter().map(|&x| x as f64).collect();
            assert_eq!(got, expect, "{secs}");
        }
    }

    #[test]
    fn values_become_seconds_as_in_go() {
        assert_eq!(go_seconds(-1.5), -1);
        assert_eq!(go_seconds(-0.5), 0);
        assert_eq!(go_seconds(1.9), 1);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20, -1e20] {
            assert_eq!(go_seconds(v), i64::MIN, "{v}");
        }
    }
}
