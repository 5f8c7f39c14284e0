//! Turning one input record (a row of cells, whatever the format) into a validated [`Event`]
//! or a rejection reason. Every reader fills a [`Cells`] array and calls
//! [`Converter::event`], so every format validates rows the same way.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use personaflow_operators::Event;

use super::mapping::{Literal, TsUnit};
use super::{MAX_EVENT_BYTES, MAX_EVENT_LATENCY_MS, MAX_EVENT_TS_MS};
use crate::schema::CANONICAL_COLUMNS;

/// Number of canonical columns.
pub(crate) const N_FIELDS: usize = CANONICAL_COLUMNS.len();

// Indices of the canonical columns in `CANONICAL_COLUMNS` (checked by a test).
pub(crate) const TS: usize = 0;
pub(crate) const USER_ID: usize = 1;
pub(crate) const SESSION_ID: usize = 2;
pub(crate) const AUTHENTICATED: usize = 3;
pub(crate) const SEGMENT: usize = 4;
pub(crate) const ACTION: usize = 5;
pub(crate) const CATEGORY: usize = 6;
pub(crate) const BYTES_IN: usize = 7;
pub(crate) const BYTES_OUT: usize = 8;
pub(crate) const LATENCY_MS: usize = 9;
pub(crate) const STATUS: usize = 10;
pub(crate) const DEVICE: usize = 11;
pub(crate) const OS: usize = 12;
pub(crate) const COUNTRY: usize = 13;

/// Canonical columns that a numeric `scale` may be applied to.
pub(crate) const SCALABLE: [usize; 3] = [BYTES_IN, BYTES_OUT, LATENCY_MS];

/// Longest excerpt of an offending value quoted in a rejection reason, in characters.
const MAX_QUOTED_CHARS: usize = 48;
/// Milliseconds per day (for Arrow `Date32` columns and date-only formats).
pub(crate) const MS_PER_DAY: i64 = 86_400_000;
/// Nanoseconds per millisecond.
const NS_PER_MS: i128 = 1_000_000;
/// Digits of a fraction that are significant (nanosecond resolution for seconds).
const FRACTION_DIGITS: usize = 9;
/// Longest integer part of a numeric timestamp accepted before it is out of range anyway.
const MAX_TS_INT_DIGITS: usize = 24;
/// 2^64 as a float: the first value that does not fit a `u64` byte count.
const U64_LIMIT_F64: f64 = 18_446_744_073_709_551_616.0;

/// One value of an input record, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    /// Absent or null.
    Null,
    /// Text (null markers are applied by the converter).
    Str(&'a str),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A timestamp already in milliseconds since the epoch (typed Parquet columns).
    TsMs(i64),
    /// A value that cannot be used at all, with the reason.
    Invalid(&'static str),
}

/// The cells of one record, indexed like `CANONICAL_COLUMNS`.
pub(crate) type Cells<'a> = [Cell<'a>; N_FIELDS];

/// A rejected field: the canonical column (None for the whole record) and why.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    pub field: Option<&'static str>,
    pub reason: String,
}

impl FieldError {
    fn at(field: usize, reason: String) -> Self {
        FieldError {
            field: Some(CANONICAL_COLUMNS[field]),
            reason,
        }
    }
}

/// How string timestamps are parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TsFormat {
    /// Numbers in the configured unit, anything else as RFC 3339.
    Auto,
    /// RFC 3339 only.
    Rfc3339,
    /// A chrono format string, parsed as the given kind first.
    Chrono { fmt: String, kind: ChronoKind },
}

/// What a chrono format string describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChronoKind {
    /// Date, time and UTC offset.
    Offset,
    /// Date and time, taken as UTC.
    DateTime,
    /// A date only, taken as midnight UTC.
    Date,
}

impl TsFormat {
    /// Builds the format from the mapping's `timestamp.format`; `Err` says why it is invalid.
    pub(crate) fn from_spec(spec: Option<&str>) -> Result<Self, String> {
        let Some(fmt) = spec else {
            return Ok(TsFormat::Auto);
        };
        if fmt.eq_ignore_ascii_case("rfc3339") {
            return Ok(TsFormat::Rfc3339);
        }
        let mut has_offset = false;
        let mut has_time = false;
        for item in StrftimeItems::new(fmt) {
            match item {
                Item::Error => return Err(format!("invalid timestamp format `{fmt}`")),
                Item::Fixed(fixed) => {
                    use chrono::format::Fixed;
                    match fixed {
                        Fixed::TimezoneOffset
                        | Fixed::TimezoneOffsetColon
                        | Fixed::TimezoneOffsetDoubleColon
                        | Fixed::TimezoneOffsetTripleColon
                        | Fixed::TimezoneOffsetColonZ
                        | Fixed::TimezoneOffsetZ
                        | Fixed::RFC2822
                        | Fixed::RFC3339 => has_offset = true,
                        // Fractions and AM/PM only come with hours or seconds.
                        _ => {}
                    }
                }
                Item::Numeric(numeric, _) => {
                    use chrono::format::Numeric;
                    if matches!(
                        numeric,
                        Numeric::Hour
                            | Numeric::Hour12
                            | Numeric::Minute
                            | Numeric::Second
                            | Numeric::Nanosecond
                            | Numeric::Timestamp
                    ) {
                        has_time = true;
                    }
                }
                _ => {}
            }
        }
        let kind = if has_offset {
            ChronoKind::Offset
        } else if has_time {
            ChronoKind::DateTime
        } else {
            ChronoKind::Date
        };
        Ok(TsFormat::Chrono {
            fmt: fmt.to_owned(),
            kind,
        })
    }
}

/// Validates and converts records of one input file into events. Built from an
/// [`IngestMapping`](super::IngestMapping) (and adjusted per file, e.g. by Zeek headers).
#[derive(Clone, Debug)]
pub(crate) struct Converter {
    /// Unit of numeric timestamps.
    pub ts_unit: TsUnit,
    /// Whether the mapping set `ts_unit` explicitly (otherwise a format may pick a default).
    pub ts_unit_explicit: bool,
    /// How string timestamps are parsed.
    pub ts_format: TsFormat,
    /// Factor per canonical column.
    pub scale: [Option<f64>; N_FIELDS],
    /// Constant per canonical column (replaces whatever the record has).
    pub constants: [Option<Literal>; N_FIELDS],
    /// Strings that mean "no value".
    pub null_markers: Vec<String>,
}

impl Converter {
    /// Converts one record. The first invalid field (in canonical column order) is reported.
    pub(crate) fn event(&self, cells: &Cells<'_>) -> Result<Event, FieldError> {
        let ts_ms = self
            .timestamp(self.cell(cells, TS))
            .map_err(|r| FieldError::at(TS, r))?;
        let user_id = self.required_str(cells, USER_ID)?;
        let session_id = self.optional_str(cells, SESSION_ID)?;
        let authenticated = self
            .boolean(self.cell(cells, AUTHENTICATED))
            .map_err(|r| FieldError::at(AUTHENTICATED, r))?;
        let segment = self.optional_str(cells, SEGMENT)?;
        let action = self.required_str(cells, ACTION)?;
        let category = self.optional_str(cells, CATEGORY)?;
        let bytes_in = self
            .bytes(self.cell(cells, BYTES_IN), self.scale[BYTES_IN])
            .map_err(|r| FieldError::at(BYTES_IN, r))?;
        let bytes_out = self
            .bytes(self.cell(cells, BYTES_OUT), self.scale[BYTES_OUT])
            .map_err(|r| FieldError::at(BYTES_OUT, r))?;
        let latency_ms = self
            .latency(self.cell(cells, LATENCY_MS), self.scale[LATENCY_MS])
            .map_err(|r| FieldError::at(LATENCY_MS, r))?;
        let status = self
            .status(self.cell(cells, STATUS))
            .map_err(|r| FieldError::at(STATUS, r))?;
        let device = self.optional_str(cells, DEVICE)?;
        let os = self.optional_str(cells, OS)?;
        let country = self.optional_str(cells, COUNTRY)?;
        Ok(Event {
            ts_ms,
            user_id,
            session_id,
            authenticated,
            segment,
            action,
            category,
            bytes_in,
            bytes_out,
            latency_ms,
            status,
            device,
            os,
            country,
        })
    }

    /// Checks that every constant converts for its column; `Err` says which does not.
    pub(crate) fn check_constants(&self) -> Result<(), FieldError> {
        for (i, constant) in self.constants.iter().enumerate() {
            let Some(literal) = constant else { continue };
            let cell = literal_cell(literal);
            let res = match i {
                TS => self.timestamp(cell).map(drop),
                AUTHENTICATED => self.boolean(cell).map(drop),
                BYTES_IN | BYTES_OUT => self.bytes(cell, self.scale[i]).map(drop),
                LATENCY_MS => self.latency(cell, self.scale[i]).map(drop),
                STATUS => self.status(cell).map(drop),
                _ => match self.string(cell) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("is empty or a null marker".to_owned()),
                    Err(e) => Err(e),
                },
            };
            res.map_err(|r| FieldError::at(i, r))?;
        }
        Ok(())
    }

    /// The cell for column `i`: the constant if the mapping has one, with null markers applied.
    fn cell<'a>(&'a self, cells: &Cells<'a>, i: usize) -> Cell<'a> {
        let cell = match &self.constants[i] {
            Some(literal) => literal_cell(literal),
            None => cells[i],
        };
        match cell {
            Cell::Str(s) if self.null_markers.iter().any(|m| m == s) => Cell::Null,
            other => other,
        }
    }

    fn required_str(&self, cells: &Cells<'_>, i: usize) -> Result<String, FieldError> {
        let cell = self.cell(cells, i);
        match self.string(cell) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let what = if cell == Cell::Null {
                    "missing or empty"
                } else {
                    "blank"
                };
                Err(FieldError::at(
                    i,
                    format!("{} is {what}", CANONICAL_COLUMNS[i]),
                ))
            }
            Err(r) => Err(FieldError::at(i, r)),
        }
    }

    fn optional_str(&self, cells: &Cells<'_>, i: usize) -> Result<Option<String>, FieldError> {
        self.string(self.cell(cells, i))
            .map_err(|r| FieldError::at(i, r))
    }

    /// A string value; blank strings are absent.
    fn string(&self, cell: Cell<'_>) -> Result<Option<String>, String> {
        Ok(match cell {
            Cell::Null => None,
            Cell::Str(s) if s.trim().is_empty() => None,
            Cell::Str(s) => Some(s.to_owned()),
            Cell::Int(v) | Cell::TsMs(v) => Some(v.to_string()),
            Cell::UInt(v) => Some(v.to_string()),
            Cell::Float(v) if v.is_finite() => Some(v.to_string()),
            Cell::Float(v) => return Err(format!("expected text, found the number {v}")),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Invalid(why) => return Err(why.to_owned()),
        })
    }

    /// Milliseconds since the epoch, within `[0, MAX_EVENT_TS_MS]`.
    pub(crate) fn timestamp(&self, cell: Cell<'_>) -> Result<i64, String> {
        let ms = match cell {
            Cell::Null => return Err("timestamp is missing".to_owned()),
            Cell::TsMs(v) => v,
            Cell::Int(v) => self.ts_unit.int_to_ms(v)?,
            Cell::UInt(v) => {
                let v = i64::try_from(v).map_err(|_| format!("timestamp {v} is out of range"))?;
                self.ts_unit.int_to_ms(v)?
            }
            Cell::Float(v) => self.ts_unit.float_to_ms(v)?,
            Cell::Str(s) => self.parse_ts_str(s)?,
            Cell::Bool(_) => return Err("expected a timestamp, found a boolean".to_owned()),
            Cell::Invalid(why) => return Err(why.to_owned()),
        };
        if ms < 0 {
            return Err(format!("timestamp {} is before 1970", describe_ms(ms)));
        }
        if ms > MAX_EVENT_TS_MS {
            return Err(format!(
                "timestamp {} is too far in the future (after {})",
                describe_ms(ms),
                describe_ms(MAX_EVENT_TS_MS)
            ));
        }
        Ok(ms)
    }

    fn parse_ts_str(&self, raw: &str) -> Result<i64, String> {
        let s = raw.trim();
        let unparsable = || format!("unparsable timestamp `{}`", quote(raw));
        match &self.ts_format {
            TsFormat::Auto => {
                if let Some(res) = parse_decimal_ts(s, self.ts_unit) {
                    return res;
                }
                if s.contains(['e', 'E']) {
                    if let Ok(v) = s.parse::<f64>() {
                        return self.ts_unit.float_to_ms(v);
                    }
                }
                parse_rfc3339(s).ok_or_else(unparsable)
            }
            TsFormat::Rfc3339 => parse_rfc3339(s).ok_or_else(unparsable),
            TsFormat::Chrono { fmt, kind } => parse_chrono(s, fmt, *kind).ok_or_else(|| {
                format!(
                    "timestamp `{}` does not match the format `{fmt}`",
                    quote(raw)
                )
            }),
        }
    }

    fn boolean(&self, cell: Cell<'_>) -> Result<bool, String> {
        const TRUE_WORDS: [&str; 5] = ["true", "t", "yes", "y", "1"];
        const FALSE_WORDS: [&str; 5] = ["false", "f", "no", "n", "0"];
        match cell {
            Cell::Null => Ok(false),
            Cell::Bool(b) => Ok(b),
            Cell::Int(0) | Cell::UInt(0) => Ok(false),
            Cell::Int(1) | Cell::UInt(1) => Ok(true),
            Cell::Str(s) => {
                let t = s.trim();
                if TRUE_WORDS.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Ok(true)
                } else if FALSE_WORDS.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Ok(false)
                } else {
                    Err(format!("not a boolean: `{}`", quote(s)))
                }
            }
            Cell::Int(v) | Cell::TsMs(v) => Err(format!("not a boolean: {v}")),
            Cell::UInt(v) => Err(format!("not a boolean: {v}")),
            Cell::Float(v) => Err(format!("not a boolean: {v}")),
            Cell::Invalid(why) => Err(why.to_owned()),
        }
    }

    fn bytes(&self, cell: Cell<'_>, scale: Option<f64>) -> Result<Option<u64>, String> {
        let count = self.unbounded_bytes(cell, scale)?;
        match count {
            Some(v) if v > MAX_EVENT_BYTES => Err(format!(
                "byte count {v} is above the bound of {MAX_EVENT_BYTES} (1 PiB) per event; \
                 values like {} usually mean \"unknown\": map them to null with a null marker",
                u64::MAX
            )),
            other => Ok(other),
        }
    }

    fn unbounded_bytes(&self, cell: Cell<'_>, scale: Option<f64>) -> Result<Option<u64>, String> {
        let unsigned = |v: u64| match scale {
            None => Ok(Some(v)),
            Some(k) => float_to_count(v as f64 * k, true).map(Some),
        };
        match cell {
            Cell::Null => Ok(None),
            Cell::UInt(v) => unsigned(v),
            Cell::Int(v) if v < 0 => Err(format!("negative byte count {v}")),
            Cell::Int(v) => unsigned(v.unsigned_abs()),
            Cell::Float(v) => float_to_count(v * scale.unwrap_or(1.0), scale.is_some()).map(Some),
            Cell::Str(s) => {
                let t = s.trim();
                if let Ok(v) = t.parse::<u64>() {
                    unsigned(v)
                } else if let Ok(v) = t.parse::<i64>() {
                    Err(format!("negative byte count {v}"))
                } else if let Ok(v) = t.parse::<f64>() {
                    float_to_count(v * scale.unwrap_or(1.0), scale.is_some()).map(Some)
                } else {
                    Err(format!("not a number: `{}`", quote(s)))
                }
            }
            Cell::Bool(_) => Err("expected a byte count, found a boolean".to_owned()),
            Cell::TsMs(_) => Err("expected a byte count, found a timestamp".to_owned()),
            Cell::Invalid(why) => Err(why.to_owned()),
        }
    }

    fn latency(&self, cell: Cell<'_>, scale: Option<f64>) -> Result<Option<f64>, String> {
        let v = match cell {
            Cell::Null => return Ok(None),
            Cell::Int(v) => v as f64,
            Cell::UInt(v) => v as f64,
            Cell::Float(v) => v,
            Cell::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("not a number: `{}`", quote(s)))?,
            Cell::Bool(_) => return Err("expected a latency, found a boolean".to_owned()),
            Cell::TsMs(_) => return Err("expected a latency, found a timestamp".to_owned()),
            Cell::Invalid(why) => return Err(why.to_owned()),
        };
        let v = v * scale.unwrap_or(1.0);
        if v.is_nan() {
            Err("latency is NaN".to_owned())
        } else if v < 0.0 {
            Err(format!("negative latency {v}"))
        } else if v.is_infinite() {
            Err("latency is infinite".to_owned())
        } else if v > MAX_EVENT_LATENCY_MS {
            Err(format!(
                "latency {v} ms is above the bound of {MAX_EVENT_LATENCY_MS} ms (365 days) per \
                 event"
            ))
        } else {
            Ok(Some(v))
        }
    }

    fn status(&self, cell: Cell<'_>) -> Result<Option<i32>, String> {
        let out_of_range = |v: &dyn std::fmt::Display| format!("status {v} is out of range");
        match cell {
            Cell::Null => Ok(None),
            Cell::Int(v) => i32::try_from(v).map(Some).map_err(|_| out_of_range(&v)),
            Cell::UInt(v) => i32::try_from(v).map(Some).map_err(|_| out_of_range(&v)),
            Cell::Float(v) if v.fract() == 0.0 && v.abs() <= f64::from(i32::MAX) => {
                Ok(Some(v as i32))
            }
            Cell::Float(v) => Err(format!("status is not an integer: {v}")),
            Cell::Str(s) => match s.trim().parse::<i64>() {
                Ok(v) => i32::try_from(v).map(Some).map_err(|_| out_of_range(&v)),
                Err(_) => Err(format!("status is not an integer: `{}`", quote(s))),
            },
            Cell::Bool(_) => Err("expected a status code, found a boolean".to_owned()),
            Cell::TsMs(_) => Err("expected a status code, found a timestamp".to_owned()),
            Cell::Invalid(why) => Err(why.to_owned()),
        }
    }
}

/// The cell a mapping constant stands for.
pub(crate) fn literal_cell(literal: &Literal) -> Cell<'_> {
    match literal {
        Literal::Bool(b) => Cell::Bool(*b),
        Literal::Int(v) => Cell::Int(*v),
        Literal::Float(v) => Cell::Float(*v),
        Literal::Str(s) => Cell::Str(s),
    }
}

/// A non-negative integer count from a float; `rounded` allows a fraction (after scaling).
fn float_to_count(v: f64, rounded: bool) -> Result<u64, String> {
    if v.is_nan() {
        Err("byte count is NaN".to_owned())
    } else if v < 0.0 {
        Err(format!("negative byte count {v}"))
    } else if v.round() >= U64_LIMIT_F64 {
        Err(format!("byte count {v} is out of range"))
    } else if !rounded && v.fract() != 0.0 {
        Err(format!("byte count {v} is not an integer"))
    } else {
        // In range and non-negative: the cast is exact up to float precision.
        Ok(v.round() as u64)
    }
}

impl TsUnit {
    /// How many nanoseconds one unit is.
    fn nanos(self) -> i128 {
        match self {
            TsUnit::Seconds => 1_000_000_000,
            TsUnit::Millis => 1_000_000,
            TsUnit::Micros => 1_000,
            TsUnit::Nanos => 1,
        }
    }

    /// An integer timestamp in this unit, as milliseconds (rounded down).
    pub(crate) fn int_to_ms(self, v: i64) -> Result<i64, String> {
        let ms = (i128::from(v) * self.nanos()).div_euclid(NS_PER_MS);
        i64::try_from(ms).map_err(|_| format!("timestamp {v} is out of range"))
    }

    /// A float timestamp in this unit, as milliseconds (rounded down).
    pub(crate) fn float_to_ms(self, v: f64) -> Result<i64, String> {
        if !v.is_finite() {
            return Err(format!("timestamp {v} is not a finite number"));
        }
        let ms = (v * self.nanos() as f64 / NS_PER_MS as f64).floor();
        if ms.abs() >= i64::MAX as f64 {
            return Err(format!("timestamp {v} is out of range"));
        }
        Ok(ms as i64)
    }
}

/// Parses a plain decimal number (`[+-]digits[.digits]`) exactly, in `unit`, as milliseconds.
/// `None` if `s` is not such a number.
pub(crate) fn parse_decimal_ts(s: &str, unit: TsUnit) -> Option<Result<i64, String>> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    let out_of_range = || Err(format!("timestamp `{}` is out of range", quote(s)));
    if int_part.len() > MAX_TS_INT_DIGITS {
        return Some(out_of_range());
    }
    let int: i128 = if int_part.is_empty() {
        0
    } else {
        match int_part.parse() {
            Ok(v) => v,
            Err(_) => return Some(out_of_range()),
        }
    };
    let mut frac: i128 = 0;
    for i in 0..FRACTION_DIGITS {
        let digit = frac_part.as_bytes().get(i).map_or(0, |b| b - b'0');
        frac = frac * 10 + i128::from(digit);
    }
    let unit_ns = unit.nanos();
    let mut total_ns = int * unit_ns + frac * unit_ns / 10_i128.pow(FRACTION_DIGITS as u32);
    if negative {
        total_ns = -total_ns;
    }
    Some(i64::try_from(total_ns.div_euclid(NS_PER_MS)).or_else(|_| out_of_range()))
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

fn parse_chrono(s: &str, fmt: &str, kind: ChronoKind) -> Option<i64> {
    let offset = || {
        DateTime::parse_from_str(s, fmt)
            .ok()
            .map(|d| d.timestamp_millis())
    };
    let naive = || {
        NaiveDateTime::parse_from_str(s, fmt)
            .ok()
            .map(|d| d.and_utc().timestamp_millis())
    };
    let date = || {
        NaiveDate::parse_from_str(s, fmt)
            .ok()
            .map(|d| i64::from(d.to_epoch_days()) * MS_PER_DAY)
    };
    match kind {
        ChronoKind::Offset => offset().or_else(naive).or_else(date),
        ChronoKind::DateTime => naive().or_else(date).or_else(offset),
        ChronoKind::Date => date().or_else(naive).or_else(offset),
    }
}

/// Milliseconds as RFC 3339 for messages, or the raw number when out of chrono's range.
fn describe_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// An offending value, cut to `MAX_QUOTED_CHARS` characters for a message.
pub(crate) fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED_CHARS {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_indices_follow_the_canonical_schema() {
        let pairs = [
            (TS, "ts"),
            (USER_ID, "user_id"),
            (SESSION_ID, "session_id"),
            (AUTHENTICATED, "authenticated"),
            (SEGMENT, "segment"),
            (ACTION, "action"),
            (CATEGORY, "category"),
            (BYTES_IN, "bytes_in"),
            (BYTES_OUT, "bytes_out"),
            (LATENCY_MS, "latency_ms"),
            (STATUS, "status"),
            (DEVICE, "device"),
            (OS, "os"),
            (COUNTRY, "country"),
        ];
        assert_eq!(pairs.len(), N_FIELDS);
        for (i, name) in pairs {
            assert_eq!(CANONICAL_COLUMNS[i], name);
        }
    }

    #[test]
    fn decimal_timestamps_are_exact_in_every_unit() {
        let p = |s: &str, u: TsUnit| parse_decimal_ts(s, u).unwrap().unwrap();
        assert_eq!(p("1379262000.123456", TsUnit::Seconds), 1_379_262_000_123);
        assert_eq!(p("1379262000", TsUnit::Seconds), 1_379_262_000_000);
        assert_eq!(p("1379262000123", TsUnit::Millis), 1_379_262_000_123);
        assert_eq!(p("1379262000123.9", TsUnit::Millis), 1_379_262_000_123);
        assert_eq!(p("1379262000123456", TsUnit::Micros), 1_379_262_000_123);
        assert_eq!(p("1379262000123456789", TsUnit::Nanos), 1_379_262_000_123);
        assert_eq!(p("-0.5", TsUnit::Seconds), -500);
        assert_eq!(p("-1", TsUnit::Micros), -1, "rounds down, not towards zero");
        assert!(parse_decimal_ts("2013-09-15", TsUnit::Seconds).is_none());
        assert!(parse_decimal_ts("", TsUnit::Seconds).is_none());
        assert!(parse_decimal_ts(".", TsUnit::Seconds).is_none());
        assert!(parse_decimal_ts(&"9".repeat(30), TsUnit::Seconds)
            .unwrap()
            .is_err());
    }

    #[test]
    fn integer_and_float_units() {
        assert_eq!(TsUnit::Seconds.int_to_ms(2).unwrap(), 2_000);
        assert_eq!(TsUnit::Micros.int_to_ms(2_999).unwrap(), 2);
        assert_eq!(TsUnit::Nanos.int_to_ms(5_000_000).unwrap(), 5);
        assert_eq!(TsUnit::Seconds.float_to_ms(1.5).unwrap(), 1_500);
        assert!(TsUnit::Seconds.int_to_ms(i64::MAX).is_err());
        assert!(TsUnit::Seconds.float_to_ms(f64::NAN).is_err());
    }

    #[test]
    fn chrono_formats_are_classified() {
        let kind = |f: &str| match TsFormat::from_spec(Some(f)).unwrap() {
            TsFormat::Chrono { kind, .. } => kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind("%Y%m%d"), ChronoKind::Date);
        assert_eq!(kind("%Y-%m-%d %H:%M:%S"), ChronoKind::DateTime);
        assert_eq!(kind("%Y-%m-%d %H:%M:%S %z"), ChronoKind::Offset);
        assert_eq!(
            TsFormat::from_spec(Some("RFC3339")).unwrap(),
            TsFormat::Rfc3339
        );
        assert!(TsFormat::from_spec(Some("%Y-%Q")).is_err());
        assert_eq!(
            parse_chrono("19970101", "%Y%m%d", ChronoKind::Date),
            Some(852_076_800_000)
        );
        assert_eq!(
            parse_chrono(
                "1997-01-01 00:00:01",
                "%Y-%m-%d %H:%M:%S",
                ChronoKind::DateTime
            ),
            Some(852_076_801_000)
        );
        assert_eq!(
            parse_chrono(
                "1997-01-01 01:00:00 +0100",
                "%Y-%m-%d %H:%M:%S %z",
                ChronoKind::Offset
            ),
            Some(852_076_800_000)
        );
    }

    #[test]
    fn byte_counts_and_latencies_above_their_bounds_are_rejected() {
        let c = Converter {
            ts_unit: TsUnit::Millis,
            ts_unit_explicit: false,
            ts_format: TsFormat::Auto,
            scale: [None; N_FIELDS],
            constants: Default::default(),
            null_markers: Vec::new(),
        };
        assert_eq!(
            c.bytes(Cell::UInt(MAX_EVENT_BYTES), None),
            Ok(Some(MAX_EVENT_BYTES))
        );
        for cell in [
            Cell::UInt(u64::MAX),
            Cell::Str("18446744073709551615"),
            Cell::Float(1e19),
            Cell::Str("1e19"),
            Cell::UInt(MAX_EVENT_BYTES + 1),
        ] {
            let err = c.bytes(cell, None).unwrap_err();
            assert!(err.contains("above the bound"), "{cell:?}: {err}");
        }
        assert!(
            c.bytes(Cell::UInt(1 << 40), Some(1e6)).is_err(),
            "bounded after scaling"
        );
        assert_eq!(c.latency(Cell::Float(12.5), None), Ok(Some(12.5)));
        let err = c.latency(Cell::Float(1e16), None).unwrap_err();
        assert!(err.contains("above the bound"), "{err}");
    }

    #[test]
    fn quoting_cuts_long_values() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(
            quote(&"x".repeat(100)).chars().count(),
            MAX_QUOTED_CHARS + 1
        );
    }
}
