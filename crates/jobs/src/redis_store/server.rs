//! What soma needs of the Redis server it is given, checked once at start-up from `INFO`, so
//! that a wrong server is refused with the reason instead of failing request by request.
//!
//! * **Not a Redis Cluster**: one workload's keys (queue entries, record, payload) are used
//!   together in single scripts, and a cluster spreads them over hash slots (`CROSSSLOT`).
//! * **The primary**: a replica refuses writes (`READONLY`).
//! * **Redis 5 or later**: the scripts read the server's clock (`TIME`) before they write,
//!   which earlier versions refuse unless every script opts into effects replication.
//!
//! Settings that lose accepted workloads only in some events are warned about, not refused
//! (a test or a throw-away setup may choose them): no append-only file (a restart loses what
//! was acknowledged since the last snapshot) and an eviction policy (memory pressure drops
//! keys, workloads among them).

/// Oldest Redis version (major, minor) whose scripts may write after reading `TIME`.
const MIN_VERSION: (u32, u32) = (5, 0);

/// `Err(reason)` when the server described by `info` (the text of `INFO`) cannot serve soma,
/// else the warnings it deserves. Fields `INFO` does not show (a proxy in front of Redis may
/// hide some) are not checked.
pub(super) fn check(info: &str) -> Result<Vec<String>, String> {
    let field = |name: &str| {
        info.lines().find_map(|line| {
            let (key, value) = line.trim_end_matches('\r').split_once(':')?;
            (key == name).then_some(value)
        })
    };
    if field("cluster_enabled") == Some("1") {
        return Err(
            "it is a Redis Cluster node (cluster_enabled:1), and soma's scripts use keys \
                    of several hash slots together; give the URL of a standalone Redis, or of \
                    the primary of a replicated one"
                .into(),
        );
    }
    if let Some(role) = field("role")
        && role != "master"
    {
        return Err(format!(
            "it is a read-only replica (role:{role}); give the URL of its primary"
        ));
    }
    if let Some(version) = field("redis_version") {
        let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
        let major_minor = (parts.next().flatten(), parts.next().flatten());
        if let (Some(major), Some(minor)) = major_minor
            && (major, minor) < MIN_VERSION
        {
            return Err(format!(
                "it runs Redis {version}; soma needs Redis {}.{} or later",
                MIN_VERSION.0, MIN_VERSION.1
            ));
        }
    }
    let mut warnings = Vec::new();
    if field("aof_enabled") == Some("0") {
        warnings.push(
            "Redis runs without its append-only file (appendonly no): a Redis restart loses the \
             workloads accepted since its last snapshot; set appendonly yes"
                .to_string(),
        );
    }
    if let Some(policy) = field("maxmemory_policy")
        && policy != "noeviction"
    {
        warnings.push(format!(
            "Redis evicts keys when it reaches maxmemory (maxmemory_policy:{policy}), and \
             accepted workloads with them; set maxmemory-policy noeviction"
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::check;

    const STANDALONE: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
                              # Memory\r\nmaxmemory_policy:noeviction\r\n\
                              # Persistence\r\naof_enabled:1\r\n\
                              # Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
                              # Cluster\r\ncluster_enabled:0\r\n";

    #[test]
    fn a_standalone_primary_of_redis_5_or_later_is_accepted() {
        let none: Vec<String> = Vec::new();
        assert_eq!(check(STANDALONE), Ok(none.clone()));
        assert_eq!(
            check(&STANDALONE.replace("7.0.15", "5.0.0")),
            Ok(none.clone())
        );
        // What INFO does not say is not held against the server.
        assert_eq!(
            check("# Server\r\nredis_version:6.2.6\r\n"),
            Ok(none.clone())
        );
        assert_eq!(check(""), Ok(none));
    }

    #[test]
    fn settings_that_may_lose_workloads_are_warned_about() {
        let risky = STANDALONE
            .replace("aof_enabled:1", "aof_enabled:0")
            .replace(
                "maxmemory_policy:noeviction",
                "maxmemory_policy:allkeys-lru",
            );
        let warnings = check(&risky).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("set appendonly yes"), "{warnings:?}");
        assert!(
            warnings[1].contains("(maxmemory_policy:allkeys-lru)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_cluster_a_replica_and_an_old_version_are_refused_with_the_reason() {
        let cluster = check(&STANDALONE.replace("cluster_enabled:0", "cluster_enabled:1"));
        assert!(cluster.unwrap_err().contains("Redis Cluster"));
        let replica = check(&STANDALONE.replace("role:master", "role:slave"));
        assert!(
            replica
                .unwrap_err()
                .contains("read-only replica (role:slave)")
        );
        let old = check(&STANDALONE.replace("7.0.15", "4.0.14"));
        assert!(
            old.unwrap_err()
                .contains("Redis 4.0.14; soma needs Redis 5.0")
        );
    }
}
