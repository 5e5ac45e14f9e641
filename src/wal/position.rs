//! Positions in the WAL: log sequence numbers (`0/3000028`), and the segment files they
//! fall in. A segment's name is its timeline and its number split in two
//! (`TTTTTTTT` + `XXXXXXXX` + `YYYYYYYY`), where the split depends on the cluster's
//! `wal_segment_size`: with 16 MiB segments each "log" holds 256 of them, with 1 MiB 4096.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A log sequence number, a byte position in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/3000028` (hex, as PostgreSQL prints it).
    pub fn parse(text: &str) -> Result<Lsn> {
        let bad = || {
            Error::Source(format!(
                "`{text}` is not a WAL position (such as 0/3000028)"
            ))
        };
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        Lsn::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One segment: its timeline and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub number: u64,
}

/// How a cluster's segments are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(pub u64);

impl SegmentSize {
    /// Segments per "log" (the middle 8 hex digits of a name).
    fn per_log(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The segment holding byte `lsn`.
    pub fn segment_of(self, timeline: u32, lsn: Lsn) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / self.0,
        }
    }

    /// The segment holding the byte just before `lsn`: the last one a backup that stopped at
    /// `lsn` needs (PostgreSQL's `XLByteToPrevSeg`).
    pub fn segment_before(self, timeline: u32, lsn: Lsn) -> Segment {
        Segment {
            timeline,
            number: lsn.0.saturating_sub(1) / self.0,
        }
    }

    pub fn name(self, segment: Segment) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            segment.timeline,
            segment.number / self.per_log(),
            segment.number % self.per_log()
        )
    }

    /// The segment a 24-hex-digit name means (a `.partial` suffix is the caller's to strip).
    pub fn parse(self, name: &str) -> Option<Segment> {
        let hex = |range: std::ops::Range<usize>| {
            name.get(range)
                .and_then(|part| u64::from_str_radix(part, 16).ok())
        };
        if name.len() != 24 {
            return None;
        }
        let (timeline, log, seg) = (hex(0..8)?, hex(8..16)?, hex(16..24)?);
        (seg < self.per_log()).then_some(Segment {
            timeline: u32::try_from(timeline).ok()?,
            number: log * self.per_log() + seg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_print_as_postgres_does() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/3000028").unwrap().to_string(), "0/3000028");
        assert!(Lsn::parse("3000028").is_err());
        assert!(Lsn::parse("0/xyz").is_err());
    }

    #[test]
    fn segment_names_depend_on_the_segment_size() {
        let sixteen = SegmentSize(16 * 1024 * 1024);
        let lsn = Lsn::parse("16/B374D848").unwrap();
        let segment = sixteen.segment_of(1, lsn);
        // PostgreSQL: pg_walfile_name('16/B374D848') = 0000000100000016000000B3
        assert_eq!(sixteen.name(segment), "0000000100000016000000B3");
        assert_eq!(sixteen.parse("0000000100000016000000B3"), Some(segment));
        assert_eq!(sixteen.parse("000000010000001600000100"), None, "past 0xFF");

        let one = SegmentSize(1024 * 1024);
        let segment = one.segment_of(2, lsn);
        assert_eq!(one.name(segment), "000000020000001600000B37");
        assert_eq!(one.parse("000000020000001600000B37"), Some(segment));
        assert_eq!(one.parse("000000020000001600001000"), None, "past 0xFFF");
    }

    #[test]
    fn a_backup_stopping_on_a_segment_boundary_needs_the_segment_before_it() {
        let sixteen = SegmentSize(16 * 1024 * 1024);
        let boundary = Lsn(3 * 16 * 1024 * 1024);
        assert_eq!(sixteen.segment_before(1, boundary).number, 2);
        assert_eq!(sixteen.segment_before(1, Lsn(boundary.0 + 0x28)).number, 3);
        assert_eq!(sixteen.segment_of(1, boundary).number, 3);
    }
}
