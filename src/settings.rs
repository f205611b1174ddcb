//! The leader's live settings: the write quorum, the simulated lag range, the replication
//! timeout and the wait point. They start from the configuration and can be changed while the
//! cluster runs (`PATCH /admin/settings`, the dashboard, `semisync-kv settings`); the leader
//! reads them at every write and every delivery attempt, so a change applies to the next
//! message.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest simulated lag a message may be given, in milliseconds: long enough to watch a
/// message travel on a projector, short enough that a typo cannot stall replication for hours.
pub const MAX_LAG_MS: u64 = 60_000;

/// Longest replication timeout, in milliseconds: an hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The settings a presenter may change while the leader runs. Declared once: they are the
/// flags and environment variables of `semisync-kv serve` (flattened into its configuration),
/// the JSON of `GET /admin/settings` and `/cluster`, and a local cluster's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::Args)]
pub struct Settings {
    /// Follower acks a write waits for unless it asks for another quorum, 0..=number of
    /// followers (0 = asynchronous).
    #[arg(long, env = "WRITE_QUORUM", default_value_t = Settings::DEFAULT.write_quorum)]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub write_quorum: usize,
    /// Smallest simulated lag of each message to each follower, in milliseconds.
    #[arg(long, env = "MIN_DELAY_MS", default_value_t = Settings::DEFAULT.min_delay_ms)]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub min_delay_ms: u64,
    /// Largest simulated lag of each message to each follower, in milliseconds (at most
    /// 60000).
    #[arg(long, env = "MAX_DELAY_MS", default_value_t = Settings::DEFAULT.max_delay_ms)]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub max_delay_ms: u64,
    /// How long a write waits for its quorum before the leader answers 503, in milliseconds
    /// (at most 3600000).
    #[arg(
        long,
        env = "REPLICATE_TIMEOUT_MS",
        default_value_t = Settings::DEFAULT.replicate_timeout_ms
    )]
    #[schema(maximum = 9_007_199_254_740_991_i64)]
    pub replicate_timeout_ms: u64,
    /// When the leader's own readers see a write: `after_commit` (at once, before the quorum
    /// acknowledged it) or `after_sync` (once the quorum acknowledged it).
    #[arg(long, env = "WAIT_POINT", value_enum, default_value_t = Settings::DEFAULT.wait_point)]
    #[serde(default)]
    pub wait_point: WaitPoint,
    /// Whether the followers elect a new leader by themselves when they hear none for
    /// `FAILOVER_AFTER_MS` (by the same safe promotion as `semisync-kv failover`, never forced).
    /// Off by default, so that the manual failover lesson stays.
    #[arg(
        long,
        env = "AUTO_FAILOVER",
        default_value_t = Settings::DEFAULT.auto_failover,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(default)]
    pub auto_failover: bool,
}

/// When a write becomes visible to the leader's readers, in MySQL's terms
/// (`rpl_semi_sync_source_wait_point`). Followers show a write when they apply it, either way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum WaitPoint {
    /// The leader shows a write as soon as it applied it, while it waits for the quorum: a
    /// reader may see a write whose client then gets a 503, and that a failover may lose (a
    /// phantom read). MySQL's `AFTER_COMMIT`.
    #[default]
    AfterCommit,
    /// The leader shows a write only once its quorum acknowledged it, late acks and state
    /// transfers included: whatever a reader sees was acknowledged, so a safe failover keeps
    /// it. MySQL's `AFTER_SYNC`, its default since 5.7 ("lossless semi-sync").
    AfterSync,
}

impl WaitPoint {
    /// The name of `WAIT_POINT` and of the JSON: `after_commit` or `after_sync`.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitPoint::AfterCommit => "after_commit",
            WaitPoint::AfterSync => "after_sync",
        }
    }
}

impl std::fmt::Display for WaitPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A change to some of the [`Settings`]: the body of `PATCH /admin/settings`, and the flags of
/// `semisync-kv settings`. Fields left out keep their value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::Args,
)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// New default write quorum: follower acks a write waits for.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<usize>,
    /// New smallest simulated lag of a message, in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_delay_ms: Option<u64>,
    /// New largest simulated lag of a message, in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// New time a write waits for its quorum, in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicate_timeout_ms: Option<u64>,
    /// New wait point: when the leader's readers see a write.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_point: Option<WaitPoint>,
    /// Turns automatic failover on or off: the followers elect a new leader by themselves.
    #[arg(long, value_parser = parse_switch, value_name = "on|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_failover: Option<bool>,
}

/// Reads `on`/`off` (or `true`/`false`) for `semisync-kv settings --auto-failover`.
fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write quorum {}, lag {}..{} ms, timeout {} ms, wait point {}{}",
            self.write_quorum,
            self.min_delay_ms,
            self.max_delay_ms,
            self.replicate_timeout_ms,
            self.wait_point,
            // Named only when on: the lab's lines stay as they were without it.
            if self.auto_failover {
                ", automatic failover on"
            } else {
                ""
            }
        )
    }
}

impl SettingsChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Settings {
    /// The defaults of `semisync-kv serve`.
    pub const DEFAULT: Settings = Settings {
        write_quorum: 3,
        min_delay_ms: 0,
        max_delay_ms: 1000,
        replicate_timeout_ms: 5000,
        wait_point: WaitPoint::AfterCommit,
        auto_failover: false,
    };

    /// These settings as the environment variables `semisync-kv serve` reads them from.
    pub fn env(&self) -> [(&'static str, String); 6] {
        [
            ("WRITE_QUORUM", self.write_quorum.to_string()),
            ("MIN_DELAY_MS", self.min_delay_ms.to_string()),
            ("MAX_DELAY_MS", self.max_delay_ms.to_string()),
            (
                "REPLICATE_TIMEOUT_MS",
                self.replicate_timeout_ms.to_string(),
            ),
            ("WAIT_POINT", self.wait_point.to_string()),
            ("AUTO_FAILOVER", self.auto_failover.to_string()),
        ]
    }

    /// A simulated lag for one message: uniform in `min_delay_ms..=max_delay_ms`, with
    /// sub-millisecond resolution.
    pub fn draw_lag(&self) -> Duration {
        if self.min_delay_ms >= self.max_delay_ms {
            return Duration::from_millis(self.min_delay_ms);
        }
        let ms = crate::entropy::range(self.min_delay_ms as f64..=self.max_delay_ms as f64);
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// These settings with `change` applied.
    pub fn with(self, change: SettingsChange) -> Self {
        Self {
            write_quorum: change.write_quorum.unwrap_or(self.write_quorum),
            min_delay_ms: change.min_delay_ms.unwrap_or(self.min_delay_ms),
            max_delay_ms: change.max_delay_ms.unwrap_or(self.max_delay_ms),
            replicate_timeout_ms: change
                .replicate_timeout_ms
                .unwrap_or(self.replicate_timeout_ms),
            wait_point: change.wait_point.unwrap_or(self.wait_point),
            auto_failover: change.auto_failover.unwrap_or(self.auto_failover),
        }
    }

    /// Checks the settings of a leader with `followers` followers (`None`: a follower, where
    /// the quorum does not apply) whose requests may take `request_timeout_ms`. The message
    /// names the setting by its JSON field and its environment variable, and says what to
    /// change.
    pub fn validate(
        &self,
        followers: Option<usize>,
        request_timeout_ms: Option<u64>,
    ) -> Result<(), String> {
        if let Some(followers) = followers.filter(|&n| self.write_quorum > n) {
            return Err(format!(
                "write_quorum (WRITE_QUORUM) is {} but there are only {followers} followers: set \
                 it to at most {followers}",
                self.write_quorum
            ));
        }
        if self.min_delay_ms > self.max_delay_ms {
            return Err(format!(
                "min_delay_ms (MIN_DELAY_MS, {}) is above max_delay_ms (MAX_DELAY_MS, {}): lower \
                 the first or raise the second",
                self.min_delay_ms, self.max_delay_ms
            ));
        }
        if self.max_delay_ms > MAX_LAG_MS {
            return Err(format!(
                "max_delay_ms (MAX_DELAY_MS, {}) is above the limit of {MAX_LAG_MS} ms: lower it",
                self.max_delay_ms
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.replicate_timeout_ms) {
            return Err(format!(
                "replicate_timeout_ms (REPLICATE_TIMEOUT_MS, {}) must be between 1 and \
                 {MAX_TIMEOUT_MS} (an hour)",
                self.replicate_timeout_ms
            ));
        }
        if let Some(request_timeout_ms) =
            request_timeout_ms.filter(|&ms| ms <= self.replicate_timeout_ms)
        {
            return Err(format!(
                "replicate_timeout_ms (REPLICATE_TIMEOUT_MS, {}) must be below REQUEST_TIMEOUT_MS \
                 ({request_timeout_ms}), or writes that wait for their quorum would be cut off",
                self.replicate_timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Settings = Settings::DEFAULT;

    #[test]
    fn lags_are_drawn_within_the_range_with_fractions_of_a_millisecond() {
        let settings = Settings {
            min_delay_ms: 2,
            max_delay_ms: 4,
            ..DEFAULTS
        };
        let lags: Vec<Duration> = (0..1000).map(|_| settings.draw_lag()).collect();
        let (two, four) = (Duration::from_millis(2), Duration::from_millis(4));
        assert!(lags.iter().all(|lag| (two..=four).contains(lag)));
        let whole = lags
            .iter()
            .filter(|lag| lag.subsec_nanos() % 1_000_000 == 0);
        assert!(
            whole.count() < 10,
            "lags are not rounded to whole milliseconds"
        );
        assert!(lags.iter().any(|lag| *lag < Duration::from_micros(2500)));
        assert!(lags.iter().any(|lag| *lag > Duration::from_micros(3500)));
        let fixed = Settings {
            min_delay_ms: 7,
            max_delay_ms: 7,
            ..DEFAULTS
        };
        assert_eq!(fixed.draw_lag(), Duration::from_millis(7));
    }

    #[test]
    fn a_change_replaces_only_the_fields_it_names() {
        let change = SettingsChange {
            max_delay_ms: Some(3000),
            ..SettingsChange::default()
        };
        let changed = DEFAULTS.with(change);
        assert_eq!(changed.max_delay_ms, 3000);
        assert_eq!(changed.with(SettingsChange::default()), changed);
        assert_eq!(
            Settings {
                max_delay_ms: 1000,
                ..changed
            },
            DEFAULTS
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases = [
            (
                SettingsChange {
                    write_quorum: Some(6),
                    ..SettingsChange::default()
                },
                "WRITE_QUORUM",
            ),
            (
                SettingsChange {
                    min_delay_ms: Some(2000),
                    ..SettingsChange::default()
                },
                "MIN_DELAY_MS",
            ),
            (
                SettingsChange {
                    max_delay_ms: Some(MAX_LAG_MS + 1),
                    ..SettingsChange::default()
                },
                "MAX_DELAY_MS",
            ),
            (
                SettingsChange {
                    replicate_timeout_ms: Some(0),
                    ..SettingsChange::default()
                },
                "between 1 and",
            ),
            (
                SettingsChange {
                    replicate_timeout_ms: Some(15_000),
                    ..SettingsChange::default()
                },
                "REQUEST_TIMEOUT_MS",
            ),
        ];
        assert_eq!(DEFAULTS.validate(Some(5), Some(15_000)), Ok(()));
        for (change, expected) in cases {
            let err = DEFAULTS
                .with(change)
                .validate(Some(5), Some(15_000))
                .expect_err("must be refused");
            assert!(err.contains(expected), "{change:?}: {err}");
        }
        // A follower has no quorum to check.
        let big_quorum = Settings {
            write_quorum: 9,
            ..DEFAULTS
        };
        assert_eq!(big_quorum.validate(None, None), Ok(()));
        // Without a request timeout, the timeout still has a bound.
        let forever = Settings {
            replicate_timeout_ms: u64::MAX,
            ..DEFAULTS
        };
        assert!(forever.validate(None, None).is_err());
    }
}
