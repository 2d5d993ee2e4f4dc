//! The Lua scripts behind every Redis operation that reads and then writes. Redis runs a
//! script atomically (no other command interleaves), so each conditional change is one
//! indivisible step, exactly like a redb write transaction in the embedded backend.
//!
//! Lease deadlines use Redis' own clock (`TIME`), so gateways and workers on different
//! machines agree on when a lease expired even if their clocks drift.

use std::sync::LazyLock;

use redis::Script;

/// `now_ms()`: milliseconds on the Redis server's clock.
const NOW: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}\n{body}"))
}

/// Wake tokens kept in the wake list while no consumer is blocked on it. Each token only
/// makes one idle consumer pop once, so a few are enough; the cap keeps the list tiny when
/// every consumer is busy and nobody takes them.
pub(super) const WAKE_TOKENS: usize = 32;

/// `push_id(ready, leases, since, seq, wake, id)`: the push shared by [`PUSH`] and
/// [`ENQUEUE`]. Appends `id` unless it is queued or leased (then 0), and pushes a wake token
/// for a consumer blocked on the wake list (`BLPOP`); 1.
static PUSH_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
local function push_id(ready, leases, since, seq, wake, id)
  if redis.call('ZSCORE', ready, id) or redis.call('ZSCORE', leases, id) then
    return 0
  end
  redis.call('ZADD', ready, redis.call('INCR', seq), id)
  redis.call('HSET', since, id, now_ms())
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, {})
  return 1
end
",
        WAKE_TOKENS - 1
    )
});

/// KEYS: ready, leases, since, seq, wake. ARGV: id. 1 if `id` was appended, 0 if it was
/// queued or leased already (see `push_id`).
pub(super) static PUSH: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{}
return push_id(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1])
",
        *PUSH_ID
    ))
});

/// `pop_lease(first_only)`: the pop shared by [`POP`] and [`TAKE`] (KEYS: ready, leases,
/// since, seq, lease info; ARGV[1]: lease ms). Leases the next visible id, expired leases
/// first (they are the oldest), and returns `id, token, attempt`; nil when nothing is
/// visible; `nil, 'waiting'` when `first_only` and a lease expired (nothing is taken).
/// Their scripts answer the last two with nil and 0.
const POP_LEASE: &str = r"
local function pop_lease(first_only)
  local now = now_ms()
  local id
  local attempt = 1
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
  if #expired > 0 then
    if first_only then return nil, 'waiting' end
    id = expired[1]
    local info = redis.call('HGET', KEYS[5], id)
    if info then attempt = tonumber(string.match(info, ':(%d+)$')) + 1 end
  else
    local first = redis.call('ZRANGE', KEYS[1], 0, 0)
    if #first == 0 then return nil end
    id = first[1]
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
  end
  local token = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
  redis.call('HSET', KEYS[5], id, token .. ':' .. attempt)
  return id, token, attempt
end
";

/// KEYS: ready, leases, since, seq, lease info. ARGV: lease ms, first only (`1` or `0`).
/// Returns `{id, token, attempt}`, nil or 0 (see `pop_lease`).
pub(super) static POP: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{POP_LEASE}
local id, token, attempt = pop_lease(ARGV[2] == '1')
if not id then return token == 'waiting' and 0 or false end
return {{id, tostring(token), attempt}}
",
    ))
});

/// KEYS: leases, lease info. ARGV: id, token, lease ms. 1 if the token still holds the lease.
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local info = redis.call('HGET', KEYS[2], ARGV[1])
if not info or string.match(info, '^(%d+):') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
",
    )
});

/// KEYS: leases, lease info. ARGV: id, token. 1 if the token held the lease, which now runs
/// out (its deadline is now: the next pop delivers it again) and is held by nobody (token
/// 0: `INCR` hands out tokens from 1).
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local info = redis.call('HGET', KEYS[2], ARGV[1])
if not info or string.match(info, '^(%d+):') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], '0:' .. string.match(info, ':(%d+)$'))
return 1
",
    )
});

/// KEYS: leases, lease info. ARGV: id, token. 1 if the token held the lease (now deleted).
pub(super) static ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local info = redis.call('HGET', KEYS[2], ARGV[1])
if not info or string.match(info, '^(%d+):') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
",
    )
});

/// KEYS: ready, since. ARGV: id. 1 if a never-popped item was removed.
pub(super) static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
",
    )
});

/// KEYS: ready, leases, since. Returns `{queued, in_flight, oldest age ms or -1}`.
pub(super) static STATS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local now = now_ms()
local ready = redis.call('ZCARD', KEYS[1])
local expired = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local leased = redis.call('ZCARD', KEYS[2])
local oldest = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0)
if #first > 0 then
  local since = redis.call('HGET', KEYS[3], first[1])
  if since then oldest = tonumber(since) end
end
local e = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #e > 0 then
  local deadline = tonumber(e[2])
  if oldest < 0 or deadline < oldest then oldest = deadline end
end
local age = -1
if oldest >= 0 then age = math.max(0, now - oldest) end
return {ready + expired, leased - expired, age}
",
    )
});

/// KEYS: record, counts. ARGV: record json, status. 0 if the record exists already.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
",
    )
});

/// Compare-and-set of a record. KEYS: record, counts, result, finished index.
/// ARGV: expected json, new json, old status, new status, finished score ('' = not final),
/// finished index member, '1' to store ARGV[8] as the result.
/// 0 when the stored record is no longer the expected one (the caller re-reads and retries).
pub(super) static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[2], ARGV[3], -1)
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6]) end
if ARGV[7] == '1' then redis.call('SET', KEYS[3], ARGV[8]) end
return 1
",
    )
});

/// KEYS: finished index. ARGV: cutoff (µs, exclusive), key prefix, batch size.
/// Deletes up to a batch of final records that finished before the cutoff, with their
/// results and counts, and returns their index members (`api/status/id`).
pub(super) static EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(members) do
  local api, status, id = string.match(m, '^([^/]+)/([^/]+)/([^/]+)$')
  if api then
    redis.call('DEL', ARGV[2] .. 'rec:' .. api .. ':' .. id, ARGV[2] .. 'res:' .. api .. ':' .. id)
    redis.call('HINCRBY', ARGV[2] .. 'counts:' .. api, status, -1)
  end
  redis.call('ZREM', KEYS[1], m)
end
return members
",
    )
});

/// [`POP`] (same KEYS and ARGV[1]; first only is ARGV[5]) that also returns the popped
/// workload's record JSON and its payload hash's `ct` and `body` (nil when absent): `{id,
/// token, attempt, record, ct, body}`. Their keys depend on the popped id, so they are built
/// from ARGV[2] (record key prefix) and ARGV[3], ARGV[4] (payload key before and after the
/// id); fine on a single Redis (the `EXPIRE` script does the same), not on Redis Cluster.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{POP_LEASE}
local id, token, attempt = pop_lease(ARGV[5] == '1')
if not id then return token == 'waiting' and 0 or false end
local record = redis.call('GET', ARGV[2] .. id)
local blob = redis.call('HMGET', ARGV[3] .. id .. ARGV[4], 'ct', 'body')
return {{id, tostring(token), attempt, record, blob[1], blob[2]}}
",
    ))
});

/// Submit of a payload kept in Redis (or of the marker of one in S3) in one step.
/// KEYS: record, counts, blob, ready, leases, since, seq, wake.
/// ARGV: record json, status, content type, body, id.
/// 0 if the record exists (nothing written), -1 if a payload is stored under the key
/// already (nothing written: the caller takes the step-by-step path, which cleans up), else 1.
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{}
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('HSET', KEYS[3], 'ct', ARGV[3], 'body', ARGV[4])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
push_id(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[5])
return 1
",
        *PUSH_ID
    ))
});

/// Settle in one step: [`TRANSITION`] of the record, then delete the payload and ack.
/// KEYS: record, counts, result, finished index, blob, leases, lease info.
/// ARGV 1-8: as for TRANSITION; ARGV[9]: id, ARGV[10]: token, ARGV[11]: content type of a
/// large-store marker.
/// 0 on a conflict (nothing written); 2 when the payload is in the large store (only the
/// record was written: the caller deletes the payload, then acks); else 1.
pub(super) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[2], ARGV[3], -1)
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6]) end
if ARGV[7] == '1' then redis.call('SET', KEYS[3], ARGV[8]) end
if redis.call('HGET', KEYS[5], 'ct') == ARGV[11] then return 2 end
redis.call('DEL', KEYS[5])
local info = redis.call('HGET', KEYS[7], ARGV[9])
if info and string.match(info, '^(%d+):') == ARGV[10] then
  redis.call('ZREM', KEYS[6], ARGV[9])
  redis.call('HDEL', KEYS[7], ARGV[9])
end
return 1
",
    )
});
