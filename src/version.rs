//! A write's version: the term of the leader that issued it and that leader's counter, written
//! `term.counter` (`3.42`), and ordered by term first.
//!
//! Last writer wins by version ([`Store::apply`](crate::store::Store::apply)), so versions must
//! order writes as the leaders issued them, whatever the failovers in between. A new leader
//! continues its counter after the newest version it merged; but a leader it could not reach
//! (deposed, on the other side of a partition) may have issued versions above that one, which
//! no quorum holds. Ordering by the term first makes every write of a newer term beat every one
//! of an older term, so such orphans lose to the new leader's writes without the counter having
//! to jump past them, and the counter stays a count of writes people can read.
//!
//! Two leaders issue versions of one term only when a forced promotion took a term that another
//! node already led (`force` skips the majority that makes a term one node's); that leader
//! continues its counter from the clock (see `failover`), so their versions do not meet.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A leadership: a number that only grows. Each new leader (a promotion, or a leader's start)
/// takes a term above every one it has seen, and every message a leader sends carries its term,
/// so a node that has seen a newer term refuses a deposed leader's messages (fencing).
pub type Term = u64;

/// Largest integer a JSON number holds exactly: terms, counters and counts stay at or below it.
pub const MAX_JSON_INTEGER: u64 = (1 << 53) - 1;

/// The version of a write: `term.counter`, ordered by term, then counter. `0.0` means
/// "nothing written yet".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// The term of the leader that issued it.
    pub term: Term,
    /// That leader's count of writes, continued from the newest version it merged.
    pub counter: u64,
}

impl Version {
    /// Nothing written yet.
    pub const ZERO: Self = Self::new(0, 0);

    /// The version `term.counter`.
    pub const fn new(term: Term, counter: u64) -> Self {
        Self { term, counter }
    }

    /// The next version of the same term.
    pub fn next(self) -> Self {
        Self::new(self.term, self.counter + 1)
    }

    /// How many writes `self` is ahead of `older`, by counter (0 when it is not ahead): how far
    /// a follower lags behind its leader.
    pub fn writes_since(self, older: Self) -> u64 {
        self.counter.saturating_sub(older.counter)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.counter)
    }
}

/// Why a text is not a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVersion(String);

impl fmt::Display for BadVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a version: a version is `term.counter`, two whole numbers from 0 to \
             {MAX_JSON_INTEGER} (for example 3.42, as a write's answer gives it)",
            self.0
        )
    }
}

impl std::error::Error for BadVersion {}

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(text.to_owned());
        let number = |part: &str| {
            if part.is_empty() || part.len() > 16 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse::<u64>()
                .ok()
                .filter(|&value| value <= MAX_JSON_INTEGER)
        };
        let (term, counter) = text.split_once('.').ok_or_else(bad)?;
        Ok(Self::new(
            number(term).ok_or_else(bad)?,
            number(counter).ok_or_else(bad)?,
        ))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Version;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version `term.counter` as a string, such as \"3.42\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Version, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl utoipa::PartialSchema for Version {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]{1,16}\.[0-9]{1,16}$"))
            .description(Some(
                "A write's version, `term.counter`: the term of the leader that issued it and \
                 that leader's count of writes. Versions order by term, then counter: every \
                 write of a newer term is newer than any of an older one.",
            ))
            .examples([serde_json::json!("3.42")])
            .into()
    }
}

impl utoipa::ToSchema for Version {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_term_then_counter() {
        assert!(Version::new(2, 1) > Version::new(1, 900));
        assert!(Version::new(2, 7) > Version::new(2, 6));
        assert!(Version::ZERO < Version::new(0, 1));
        assert_eq!(Version::new(3, 41).next(), Version::new(3, 42));
        assert_eq!(Version::new(4, 50).writes_since(Version::new(3, 42)), 8);
        assert_eq!(Version::new(4, 50).writes_since(Version::new(3, 90)), 0);
    }

    #[test]
    fn a_version_reads_as_it_writes() {
        let version = Version::new(3, 42);
        assert_eq!(version.to_string(), "3.42");
        assert_eq!("3.42".parse::<Version>(), Ok(version));
        assert_eq!(
            serde_json::to_string(&version).expect("serializable"),
            r#""3.42""#
        );
        assert_eq!(
            serde_json::from_str::<Version>(r#""3.42""#).expect("a version"),
            version
        );
        let top = format!("{MAX_JSON_INTEGER}.{MAX_JSON_INTEGER}");
        assert_eq!(
            top.parse::<Version>(),
            Ok(Version::new(MAX_JSON_INTEGER, MAX_JSON_INTEGER))
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_form_it_needs() {
        let too_large = format!("1.{}", MAX_JSON_INTEGER + 1);
        for bad in [
            "", "42", "3.", ".4", "3.4.2", "-3.4", "3.-4", "+3.4", "3 .4", "a.b", &too_large,
        ] {
            let err = bad.parse::<Version>().expect_err(bad);
            assert!(err.to_string().contains("term.counter"), "{err}");
        }
        assert!(serde_json::from_str::<Version>("42").is_err());
        assert!(serde_json::from_str::<Version>("3.42").is_err());
    }
}
