//! The Lua scripts that make each protocol step atomic on the Redis server.
//!
//! Each touches only keys of one hash tag (see `keys.rs`), so they also run on
//! a Redis Cluster. `redis::Script` sends them by SHA and reloads them after a
//! server restart (NOSCRIPT).

use redis::Script;

/// Takes the lease if free and returns `{1, version}`, or `{0, 0}`.
/// KEYS: lease, version. ARGV: token, ttl ms.
const LEASE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, 0}
";

/// Extends the lease only if it is still ours (compare-and-pexpire).
/// KEYS: lease. ARGV: token, ttl ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Frees the lease only if it is still ours (compare-and-delete), and says so
/// on the channel: waiters elsewhere try to take it at once instead of at their
/// next safety poll (matters when the holder ends without a value).
/// KEYS: lease. ARGV: token, channel.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
";

/// Writes the entry if the version is still the expected one (any version
/// when ARGV[1] is empty), bumps the version, notifies. Returns `{1, new}` or
/// `{0, current}`.
/// KEYS: value, version. ARGV: expected version or '', payload, value px,
/// channel, version px.
const PUT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' and cur ~= tonumber(ARGV[1]) then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local v = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[4], v)
return {1, v}
";

/// Deletes the entry, bumps the version (voiding every lease's fencing token),
/// notifies. KEYS: value, version. ARGV: channel, version px.
const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1])
local v = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[1], v)
return v
";

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) lease: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) put: Script,
    pub(crate) invalidate: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            lease: Script::new(LEASE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            put: Script::new(PUT),
            invalidate: Script::new(INVALIDATE),
        }
    }
}
