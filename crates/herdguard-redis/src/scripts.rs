//! The Lua scripts that make each protocol step atomic on the Redis server.
//!
//! Each touches only keys of one hash tag (see `keys.rs`), so they also run on
//! a Redis Cluster. `redis::Script` sends them by SHA and reloads them after a
//! server restart (NOSCRIPT).
//!
//! **Versions.** Every lease grant, write and invalidation advances the key's
//! version, so a lease's version is its fencing token. A missing version (it
//! expired, or Redis restarted empty) starts from the server's clock in
//! microseconds, never from zero: a lease or copy from before the restart then
//! carries an older version than any the key will have again, so it cannot
//! match by accident. (Versions stay below 2^53, exact in Lua's doubles, until
//! the year 2255.)
//!
//! **Untrusted bytes.** A key may hold anything another program left there:
//! reads go through `redis.pcall` and treat what they cannot use as absent,
//! and every write overwrites whatever type the key had.
//!
//! **Announcements.** Writes, invalidations and lease releases publish
//! `<kind> <version> <tag>` on the prefix's change channel (`w`rite,
//! `i`nvalidate, `r`elease): waiters wake, other processes evict older copies.

use redis::Script;

/// Adds a member to a tag's set and keeps the set at least as long as the
/// member's entry may live (the set's expiry only ever grows). One key, so it
/// runs on a Redis Cluster too. KEYS: the tag set. ARGV: member, ms.
const TAG_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// Returns a tag set's members and deletes it, atomically: a member added
/// after it is in the next purge's set, never lost between the two.
/// KEYS: the tag set.
const TAG_TAKE: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
";

/// The fleet's live view: stores this instance's record (stamped with the
/// server's clock, so instances' clocks need not agree), forgets records older
/// than the age limit and returns the others, newest first is not promised.
/// A field that is not `<ms> <record>` (bytes left by something else) is removed.
/// KEYS: the instance hash. ARGV: instance id, record, age limit ms, most records.
const INSTANCES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 10)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sp = string.find(v, ' ', 1, true)
  local at = sp and tonumber(string.sub(v, 1, sp - 1)) or nil
  if at == nil or now - at > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  elseif #out < tonumber(ARGV[4]) then
    out[#out + 1] = string.sub(v, sp + 1)
  end
end
return out
";

/// Helpers every script starts with.
const PRELUDE: &str = r"
local function fmt(n) return string.format('%.0f', n) end
local function version(k)
  local raw = redis.pcall('GET', k)
  local v = type(raw) == 'string' and tonumber(raw) or nil
  if v then return v end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function bump(k, px)
  local v = version(k) + 1
  redis.call('SET', k, fmt(v), 'PX', px)
  return v
end
local function holds(k, token)
  return token ~= '' and redis.pcall('GET', k) == token
end
local function pending(held, token)
  local mark = redis.pcall('GET', held)
  return (type(mark) == 'string' and mark ~= token) and 1 or 0
end
";

/// Takes the lease if free and returns `{1, version, taken over}` (the grant
/// advances the version), or `{0, 0, 0}`. A lease key without an expiry was
/// not written by a lease (bytes left by something else): it is cleared, not
/// waited on forever.
///
/// **Take-overs.** Each grant also sets the key's held mark to the holder's
/// token, for the held time: the lease TTL plus a margin of one more lease TTL,
/// at least 1 s (`held_px` in `remote.rs`), extended by every renewal. The
/// holder's fenced write and release delete the mark if it is still the
/// holder's own — even after its lease lapsed, when nobody took over — and an
/// invalidation deletes it. So a grant that finds another holder's mark follows
/// a lease that lapsed without being given back, at most the margin ago: its
/// holder died, hung or lost Redis while its origin call may still run (or was
/// lost). That grant is a take-over (it may duplicate that call), and so is
/// none other:
/// - a grant after a release or a write finds no mark;
/// - a holder that finishes late (after its lease lapsed, before anyone took
///   over) deletes its own mark: no load was duplicated;
/// - a late holder never deletes a taker's mark (tokens differ);
/// - a grant later than the margin after a lapse finds the mark expired: it is
///   a new load of a key whose last holder vanished, not a take-over. Waiters
///   on a lease re-check at their safety poll (250 ms by default) and so take
///   over well within the margin; a safety poll longer than the margin would
///   count their take-overs as new loads.
///
/// KEYS: lease, version, held. ARGV: token, lease ms, version ms, held ms.
const LEASE: &str = r"
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('DEL', KEYS[1]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local took = pending(KEYS[3], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
  return {1, bump(KEYS[2], ARGV[3]), took}
end
return {0, 0, 0}
";

/// Extends the lease only if it is still ours (compare-and-pexpire), and the
/// held mark, when given, if it is still ours: it follows a holder that is
/// alive. Lock servers of quorum leases have no held mark.
/// KEYS: lease[, held]. ARGV: token, lease ms[, held ms].
const RENEW: &str = r"
if KEYS[2] and holds(KEYS[2], ARGV[1]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
if holds(KEYS[1], ARGV[1]) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Frees the lease only if it is still ours (compare-and-delete), leaves the
/// marker of a load that stored nothing, and announces the release: waiters
/// elsewhere act at once instead of at their next safety poll. The held mark
/// goes if it is ours, even when the lease already lapsed: the load ended.
/// KEYS: lease, marker, held. ARGV: token, channel, tag, marker bytes or '', marker ms.
const RELEASE: &str = r"
if holds(KEYS[3], ARGV[1]) then redis.call('DEL', KEYS[3]) end
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
redis.call('PUBLISH', ARGV[2], 'r 0 ' .. ARGV[3])
return 1
";

/// Writes the entry if the key is still at the expected version (any version
/// when ARGV[1] is ''), gives the lease back if the token holds it (whatever
/// the write decides), advances the version, splices it into the payload
/// (bytes 2..21, twenty ASCII digits), clears the marker and announces.
/// The held mark goes if it is the token's, as in `RELEASE`.
/// Returns `{1, new version}` or `{0, current version}`.
/// KEYS: value, version, lease, marker, held. ARGV: expected version or '',
/// token or '', payload, value ms, channel, version ms, tag.
const PUT: &str = r"
if holds(KEYS[5], ARGV[2]) then redis.call('DEL', KEYS[5]) end
local released = holds(KEYS[3], ARGV[2])
if released then redis.call('DEL', KEYS[3]) end
local cur = version(KEYS[2])
if ARGV[1] ~= '' and cur ~= tonumber(ARGV[1]) then
  if released then redis.call('PUBLISH', ARGV[5], 'r 0 ' .. ARGV[7]) end
  return {0, cur}
end
local v = cur + 1
redis.call('SET', KEYS[2], fmt(v), 'PX', ARGV[6])
local p = ARGV[3]
redis.call('SET', KEYS[1], string.sub(p, 1, 1) .. string.format('%020.0f', v) .. string.sub(p, 22), 'PX', ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('PUBLISH', ARGV[5], 'w ' .. fmt(v) .. ' ' .. ARGV[7])
return {1, v}
";

/// Deletes the entry, marker and lease, advances the version (voiding every
/// load in flight's fencing token; a new load may start at once) and
/// announces. Returns the new version.
/// KEYS: value, version, lease, marker, held. ARGV: channel, version ms, tag.
const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
local v = bump(KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'i ' .. fmt(v) .. ' ' .. ARGV[3])
return v
";

/// Quorum leases: marks the lease granted by a majority of the lock servers
/// in the data store and advances the key's version there (the fencing token
/// of the grant). The mark is the token, kept for the lease TTL, so that the
/// fenced write and the release give it back and announce it as they do a
/// single-server lease; whoever holds the quorum, the newest grant's mark wins.
/// Sets the held mark as `LEASE` does (the lock servers' locks lapse as the
/// data store's lease does, so the same rules tell a take-over).
/// Returns `{new version, taken over}`.
/// KEYS: lease, version, held. ARGV: token, lease ms, version ms, held ms.
const FENCE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local took = pending(KEYS[3], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
return {bump(KEYS[2], ARGV[3]), took}
";

/// Quorum leases, on one lock server: frees the lock only if it is still ours
/// (compare-and-delete). KEYS: lock. ARGV: token.
const UNLOCK: &str = r"
if holds(KEYS[1], ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) lease: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) put: Script,
    pub(crate) invalidate: Script,
    pub(crate) fence: Script,
    pub(crate) unlock: Script,
    pub(crate) instances: Script,
    pub(crate) tag_add: Script,
    pub(crate) tag_take: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            lease: with_prelude(LEASE),
            renew: with_prelude(RENEW),
            release: with_prelude(RELEASE),
            put: with_prelude(PUT),
            invalidate: with_prelude(INVALIDATE),
            fence: with_prelude(FENCE),
            unlock: with_prelude(UNLOCK),
            instances: Script::new(INSTANCES),
            tag_add: Script::new(TAG_ADD),
            tag_take: Script::new(TAG_TAKE),
        }
    }
}
