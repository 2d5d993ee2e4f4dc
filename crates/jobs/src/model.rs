//! Plain data: ids, statuses, records and the small structs the traits exchange.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::JobsError;

/// Identifier of one workload: a UUID v4 in canonical lowercase hyphenated form.
///
/// Cortex used the ingress `x-request-id` (a UUID v4) as the id; keeping the same shape
/// means ids are safe as path segments in every backend (file names, S3 keys, Redis keys).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct WorkloadId(String);

impl WorkloadId {
    /// A fresh random id.
    pub fn random() -> WorkloadId {
        WorkloadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Accepts a hyphenated UUID v4 (any case) and normalizes it to lowercase.
    pub fn parse(value: &str) -> Result<WorkloadId, JobsError> {
        let invalid = |reason: &str| JobsError::InvalidId {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        // Only the 36-character hyphenated form: braces, URNs and the simple form would give
        // the same workload several spellings.
        if value.len() != 36 {
            return Err(invalid("expected a hyphenated UUID of 36 characters"));
        }
        let uuid = uuid::Uuid::try_parse(value).map_err(|e| invalid(&e.to_string()))?;
        if uuid.get_version_num() != 4 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return Err(invalid("expected a version 4 UUID"));
        }
        Ok(WorkloadId(uuid.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkloadId {
    type Err = JobsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkloadId::parse(s)
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkloadId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for WorkloadId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkloadId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Name of an async API, the namespace of its queue and workloads.
///
/// DNS-1035 like Cortex API names (`^[a-z]([-a-z0-9]*[a-z0-9])?$`), at most 63 characters.
/// Cortex's stricter 42-character limit is the config layer's business; this type only
/// guarantees the name is safe inside storage keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ApiName(String);

impl ApiName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(value: &str) -> Result<ApiName, JobsError> {
        let invalid = |reason: &str| JobsError::InvalidApiName {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(invalid("must be 1 to 63 characters"));
        }
        if !bytes[0].is_ascii_lowercase() {
            return Err(invalid("must start with a lowercase letter"));
        }
        if bytes[bytes.len() - 1] == b'-' {
            return Err(invalid("must not end with '-'"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(invalid(
                "only lowercase letters, digits and '-' are allowed",
            ));
        }
        Ok(ApiName(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApiName {
    type Err = JobsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiName::parse(s)
    }
}

impl fmt::Display for ApiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ApiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiName({})", self.0)
    }
}

impl<'de> Deserialize<'de> for ApiName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ApiName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Lifecycle of a workload. Cortex's four statuses plus `cancelled`, which Cortex lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::InQueue,
        Status::InProgress,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The wire name, e.g. `in_queue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InQueue => "in_queue",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UTC instant with microsecond precision, stored as RFC 3339 text.
///
/// Microseconds (not nanoseconds) so that a record read back from storage compares equal
/// to the one written; clamped to years 1970..=9999, the range RFC 3339 formatting covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// 9999-12-31T23:59:59.999999Z in microseconds since the epoch.
    const MAX_MICROS: u128 = 253_402_300_799_999_999;

    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
            .min(Self::MAX_MICROS);
        // `micros` fits in u64 after the clamp above.
        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
        Timestamp(UNIX_EPOCH + Duration::from_micros(micros))
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Milliseconds since the Unix epoch (used for ordering keys).
    pub fn unix_millis(self) -> u64 {
        let millis = self
            .0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        u64::try_from(millis).unwrap_or(u64::MAX)
    }

    /// RFC 3339 with whole seconds, e.g. `2021-03-16T15:50:50Z`, as Cortex's gateway printed.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.0).to_string()
    }

    /// RFC 3339 with microseconds, the storage form.
    pub fn to_rfc3339_micros(self) -> String {
        humantime::format_rfc3339_micros(self.0).to_string()
    }

    /// Parses RFC 3339 in UTC (`Z` suffix).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, humantime::TimestampError> {
        humantime::parse_rfc3339(s).map(Timestamp::from_system_time)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::from_system_time(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339_micros())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Everything known about one workload except its payload and result bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    pub id: WorkloadId,
    pub api: ApiName,
    pub status: Status,
    /// Content-Type of the submitted payload.
    pub content_type: String,
    pub created_at: Timestamp,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When the record reached its final status.
    pub finished_at: Option<Timestamp>,
    /// How many times a worker started on it (more than 1 after a redelivery).
    pub attempts: u32,
    /// Why it failed; Cortex kept this only in worker logs.
    pub error: Option<String>,
}

impl WorkloadRecord {
    /// A fresh `in_queue` record.
    pub fn new(api: ApiName, id: WorkloadId, content_type: &str, now: Timestamp) -> Self {
        WorkloadRecord {
            id,
            api,
            status: Status::InQueue,
            content_type: content_type.to_string(),
            created_at: now,
            started_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
        }
    }

    /// Applies `mark_in_progress` (shared by the backends so they agree).
    pub(crate) fn start(&mut self, now: Timestamp) {
        self.status = Status::InProgress;
        self.started_at = Some(now);
        self.attempts = self.attempts.saturating_add(1);
    }

    /// Applies a final outcome (the result bytes are stored separately).
    pub(crate) fn finish(&mut self, outcome: &Outcome, now: Timestamp) {
        self.status = outcome.status();
        self.finished_at = Some(now);
        if let Outcome::Failed { error } = outcome {
            self.error = Some(error.clone());
        }
    }
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler's result, JSON bytes.
    Completed {
        result: Bytes,
    },
    Failed {
        error: String,
    },
    Cancelled,
}

impl Outcome {
    pub fn status(&self) -> Status {
        match self {
            Outcome::Completed { .. } => Status::Completed,
            Outcome::Failed { .. } => Status::Failed,
            Outcome::Cancelled => Status::Cancelled,
        }
    }
}

/// A popped queue item, invisible to other consumers until its lease expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub api: ApiName,
    pub id: WorkloadId,
    /// Opaque proof of this particular delivery; `ack` and `extend` with an older token fail.
    pub token: String,
    /// 1 for the first delivery, 2 after one redelivery, ...
    pub attempt: u32,
}

/// Queue depth for autoscaling and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Visible items: never popped, or whose lease expired.
    pub queued: u64,
    /// Items under a live lease.
    pub in_flight: u64,
    /// How long the oldest visible item has been waiting.
    pub oldest_queued_age: Option<Duration>,
}

/// Number of records per status for one API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub in_queue: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    pub fn get(&self, status: Status) -> u64 {
        match status {
            Status::InQueue => self.in_queue,
            Status::InProgress => self.in_progress,
            Status::Completed => self.completed,
            Status::Failed => self.failed,
            Status::Cancelled => self.cancelled,
        }
    }

    pub fn get_mut(&mut self, status: Status) -> &mut u64 {
        match status {
            Status::InQueue => &mut self.in_queue,
            Status::InProgress => &mut self.in_progress,
            Status::Completed => &mut self.completed,
            Status::Failed => &mut self.failed,
            Status::Cancelled => &mut self.cancelled,
        }
    }

    pub fn total(&self) -> u64 {
        Status::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// Blob key of a workload's payload: `<api>/<id>/payload`, Cortex's S3 layout below the prefix.
pub fn payload_key(api: &ApiName, id: &WorkloadId) -> String {
    format!("{api}/{id}/payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_id_accepts_only_canonical_v4() {
        let id = WorkloadId::parse("659938D2-2EF6-41F4-8983-4E0B7562A986").unwrap();
        assert_eq!(id.as_str(), "659938d2-2ef6-41f4-8983-4e0b7562a986");
        for bad in [
            "",
            "659938d22ef641f489834e0b7562a986",
            "{659938d2-2ef6-41f4-8983-4e0b7562a986}",
            "659938d2-2ef6-11f4-8983-4e0b7562a986", // version 1
            "659938d2-2ef6-41f4-c983-4e0b7562a986", // Microsoft variant
            "../../etc/passwd-xxxxxxxxxxxxxxxxxxxxx",
        ] {
            let err = WorkloadId::parse(bad).unwrap_err();
            assert!(matches!(err, JobsError::InvalidId { .. }), "{bad}: {err}");
            assert_eq!(err.kind(), soma_core::ErrorKind::InvalidArgument);
        }
        let random = WorkloadId::random();
        assert_eq!(WorkloadId::parse(random.as_str()).unwrap(), random);
        let json = serde_json::to_string(&random).unwrap();
        assert_eq!(serde_json::from_str::<WorkloadId>(&json).unwrap(), random);
        assert!(serde_json::from_str::<WorkloadId>("\"nope\"").is_err());
    }

    #[test]
    fn api_name_is_dns_1035() {
        for good in ["a", "iris", "text-gen-2"] {
            ApiName::parse(good).unwrap();
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "2iris",
            "Iris",
            "iris-",
            "ir_is",
            "ir/is",
            long.as_str(),
        ] {
            assert!(ApiName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_wire_names() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
        }
        let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [Status::Completed, Status::Failed, Status::Cancelled]
        );
    }

    #[test]
    fn timestamps_format_and_round_trip() {
        let t = Timestamp::from_system_time(UNIX_EPOCH + Duration::new(1_615_909_850, 123_456_789));
        assert_eq!(t.to_rfc3339(), "2021-03-16T15:50:50Z");
        assert_eq!(t.to_rfc3339_micros(), "2021-03-16T15:50:50.123456Z");
        assert_eq!(t.unix_millis(), 1_615_909_850_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        // Out-of-range instants are clamped instead of panicking in the formatter.
        let before = Timestamp::from_system_time(UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(before.to_rfc3339(), "1970-01-01T00:00:00Z");
        let after = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(400_000_000_000));
        assert_eq!(after.to_rfc3339(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn record_round_trips_through_json() {
        let api = ApiName::parse("iris").unwrap();
        let mut record =
            WorkloadRecord::new(api, WorkloadId::random(), "text/plain", Timestamp::now());
        record.start(Timestamp::now());
        record.finish(
            &Outcome::Failed {
                error: "boom".into(),
            },
            Timestamp::now(),
        );
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(
            serde_json::from_slice::<WorkloadRecord>(&bytes).unwrap(),
            record
        );
        assert_eq!(record.status, Status::Failed);
        assert_eq!(record.attempts, 1);
    }
}
