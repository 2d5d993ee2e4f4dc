//! What soma needs of the Redis server it is given, checked once at start-up from `INFO`, so
//! that a wrong server is refused with the reason instead of failing request by request.
//!
//! * **Not a Redis Cluster**: one workload's keys (queue entries, record, payload) are used
//!   together in single scripts, and a cluster spreads them over hash slots (`CROSSSLOT`).
//! * **The primary**: a replica refuses writes (`READONLY`).
//! * **Redis 5 or later**: the scripts read the server's clock (`TIME`) before they write,
//!   which earlier versions refuse unless every script opts into effects replication.

/// Oldest Redis version (major, minor) whose scripts may write after reading `TIME`.
const MIN_VERSION: (u32, u32) = (5, 0);

/// `Err(reason)` when the server described by `info` (the text of `INFO`) cannot serve soma.
/// Fields `INFO` does not show (a proxy in front of Redis may hide some) are not checked.
pub(super) fn check(info: &str) -> Result<(), String> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    const STANDALONE: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
                              # Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
                              # Cluster\r\ncluster_enabled:0\r\n";

    #[test]
    fn a_standalone_primary_of_redis_5_or_later_is_accepted() {
        assert_eq!(check(STANDALONE), Ok(()));
        assert_eq!(check(&STANDALONE.replace("7.0.15", "5.0.0")), Ok(()));
        // What INFO does not say is not held against the server.
        assert_eq!(check("# Server\r\nredis_version:6.2.6\r\n"), Ok(()));
        assert_eq!(check(""), Ok(()));
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
