//! The Lua scripts that make each protocol step atomic on the Redis server.
//!
//! Each touches only keys of one hash tag (see `keys.rs`), so they also run on
//! a Redis Cluster. `redis::Script` sends them by SHA and reloads them after a
//! server restart (NOSCRIPT).
//!
//! **Versions.** Every lease grant, write and invalidation advances the key's
//! version, so a lease's version is its fencing token. A version is hybrid:
//! one more than the key's current version, or the server's clock in
//! microseconds when that is later — so a version that is forgotten (it
//! expired, or Redis restarted empty) is never issued again, and versions
//! keep growing across both. (They stay below 2^53, exact in Lua's doubles,
//! until the year 2255.)
//!
//! **Footprint.** A key's version lives where it is needed, and no longer:
//! - in its entry (bytes 2..21), for as long as the entry lives;
//! - in its version record (`:ver`) only while no entry carries it: from a
//!   grant until the holder's write or release (kept alive as the held mark
//!   is: the lease TTL plus a margin, extended by each renewal), and after an
//!   invalidation as a tombstone for as long.
//!
//! A fenced write needs the key's current version to be its lease's; a key
//! with no version at all (its record expired, Redis restarted) refuses it,
//! so a holder that outlived its margin, or whose key was invalidated, never
//! writes, whichever way its version was lost. Every key a load leaves
//! besides the entry (lease, held mark, version record, marker) expires
//! within the lease TTL plus the margin of the load's end, or, for a marker,
//! within its own lifetime.
//!
//! **Untrusted bytes.** A key may hold anything another program left there:
//! reads go through `redis.pcall` and treat what they cannot use as absent,
//! and every write overwrites whatever type the key had.
//!
//! **Announcements.** Every write of these keys reaches the processes that
//! read them (and so hold a copy or wait) through Redis's client tracking,
//! which needs nothing here. For the broadcast feed (`feed.rs`), writes,
//! invalidations and lease releases also publish `<kind> <version> <tag>` on
//! the prefix's change channel (`w`rite, `i`nvalidate, `r`elease), unless
//! the channel argument is empty.

use redis::Script;

/// Adds a member to a tag's set until its entry may live no more (a sorted
/// set scored by that time, server clock in ms), forgets the members whose
/// time has passed, keeps at most the given number (the soonest to go are
/// dropped first) and makes the set live exactly as long as its longest-lived
/// member. Bytes of another type are replaced. One key, so it runs on a Redis
/// Cluster too. Returns how many members the bound dropped.
/// KEYS: the tag set. ARGV: member, ms, most members.
const TAG_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], 'GT', now + tonumber(ARGV[2]), ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1) else over = 0 end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return over
";

/// Returns the members of a tag's set whose entries may still live and
/// deletes the set, atomically: a member added after it is in the next
/// purge's set, never lost between the two. (A set of the earlier layout, a
/// plain set, is read whole.) KEYS: the tag set.
const TAG_TAKE: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
local members = {}
if kind == 'zset' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
elseif kind == 'set' then
  members = redis.call('SMEMBERS', KEYS[1])
end
redis.call('DEL', KEYS[1])
return members
";

/// The fleet's live view: stores this instance's record (stamped with the
/// server's clock, so instances' clocks need not agree), and returns at most
/// the given number of the others' records younger than the age limit,
/// removing the older ones it reads. It reads at most twice that number of
/// records — a random sample (`HRANDFIELD`, Redis 6.2) once the hash holds
/// more — so a call costs the same with 1,000 instances as with 64, not the
/// fleet's size each (every instance calls once a second: the whole fleet's
/// cost would grow with its square). A stale record left unread is read and
/// removed by a later call: each call samples anew. A field that is not
/// `<ms> <record>` (bytes left by something else) is removed.
/// KEYS: the instance hash. ARGV: instance id, record, age limit ms, most records.
const INSTANCES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 10)
local most = tonumber(ARGV[4])
local all
if redis.call('HLEN', KEYS[1]) > 2 * most then
  all = redis.pcall('HRANDFIELD', KEYS[1], 2 * most, 'WITHVALUES')
end
if type(all) ~= 'table' or all.err then all = redis.call('HGETALL', KEYS[1]) end
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sp = string.find(v, ' ', 1, true)
  local at = sp and tonumber(string.sub(v, 1, sp - 1)) or nil
  if at == nil or now - at > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  elseif #out < most then
    out[#out + 1] = string.sub(v, sp + 1)
  end
end
return out
";

/// Helpers every script starts with. `stored(value)`: the version the
/// entry carries, or nil (no entry, or bytes without one); `current(value,
/// ver)`: the key's version — the later of its entry's and its record's — or
/// nil when it has none; `advance(v)`: the version after `v` (see the module docs).
const PRELUDE: &str = r"
local function fmt(n) return string.format('%.0f', n) end
local function stored(value)
  local digits = redis.pcall('GETRANGE', value, 1, 20)
  return type(digits) == 'string' and string.match(digits, '^%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d$') and tonumber(digits) or nil
end
local function current(value, ver)
  local raw = redis.pcall('GET', ver)
  local v = type(raw) == 'string' and string.match(raw, '^%d+$') and tonumber(raw) or nil
  local e = stored(value)
  if v and e then return math.max(v, e) end
  return v or e
end
local function advance(v)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if v and v + 1 > now then return v + 1 end
  return now
end
local function holds(k, token)
  return token ~= '' and redis.pcall('GET', k) == token
end
local function announce(channel, message)
  if channel ~= '' then redis.call('PUBLISH', channel, message) end
end
local function pending(held, token)
  local mark = redis.pcall('GET', held)
  return (type(mark) == 'string' and mark ~= token) and 1 or 0
end
";

/// Takes the lease if free and returns `{1, version, taken over, entry}` (the
/// grant advances the version; `entry` is the version the key's entry carries,
/// or 0 when it has none or none this build could read), or `{0, 0, 0, 0}`. A lease key without an expiry was
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
/// The grant also clears the key's marker (the last load's outcome no longer
/// speaks for a key a new load is under way for) and records its version for
/// as long as the held mark lasts (see the module docs).
///
/// **Made again.** A grant whose answer was lost is made again with the same
/// token (on the command connection, after the change feed's failed): a
/// lease already the token's is granted again, at the key's current version,
/// changing nothing — not refused, which would leave the holder waiting on
/// its own lease until it lapsed. (An invalidation since deleted the lease:
/// then it is a new grant.) A take-over is told by the first answer only: one
/// made again after a lost answer is not counted as one.
///
/// KEYS: lease, version, held, value, marker. ARGV: token, lease ms, held ms.
const LEASE: &str = r"
if holds(KEYS[1], ARGV[1]) then
  return {1, current(KEYS[4], KEYS[2]) or 0, 0, stored(KEYS[4]) or 0}
end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('DEL', KEYS[1]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local took = pending(KEYS[3], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
  redis.call('DEL', KEYS[5])
  local v = advance(current(KEYS[4], KEYS[2]))
  redis.call('SET', KEYS[2], fmt(v), 'PX', ARGV[3])
  return {1, v, took, stored(KEYS[4]) or 0}
end
return {0, 0, 0, 0}
";

/// Extends the lease only if it is still ours (compare-and-pexpire), and the
/// held mark and the version record, when given, if the mark is still ours:
/// they follow a holder that is alive. Lock servers of quorum leases have
/// neither.
/// KEYS: lease[, held, version]. ARGV: token, lease ms[, held ms].
const RENEW: &str = r"
if KEYS[2] and holds(KEYS[2], ARGV[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
if holds(KEYS[1], ARGV[1]) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Frees the lease only if it is still ours (compare-and-delete), leaves the
/// marker of a load that stored nothing, and announces the release: waiters
/// elsewhere act at once instead of at their next safety poll. The held mark
/// and the version record of its grant go if the mark is ours, even when the
/// lease already lapsed: the load ended, and nothing carries that version.
/// KEYS: lease, marker, held, version. ARGV: token, channel or '', tag, marker bytes or '', marker ms.
const RELEASE: &str = r"
if holds(KEYS[3], ARGV[1]) then redis.call('DEL', KEYS[3], KEYS[4]) end
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
announce(ARGV[2], 'r 0 ' .. ARGV[3])
return 1
";

/// Writes the entry if the key is still at the expected version (any version
/// when ARGV[1] is ''; a key with no version refuses every expected one),
/// gives the lease back if the token holds it (whatever the write decides),
/// advances the version, splices it into the payload (bytes 2..21, twenty
/// ASCII digits), drops the version record (the entry carries the version
/// now), clears the marker and announces. The held mark goes if it is the
/// token's, as in `RELEASE`.
///
/// With a write-behind stream (KEYS[6]; only without a lease), the write is
/// also appended to it — fields as `queue.rs` pushes them, the version the
/// one given here — before anything is written: an `XADD` that fails (bytes
/// of another type there, no memory) fails the script with nothing written,
/// and one that succeeds is never without the entry. So the write is in both
/// or in neither, and the stream holds each key's writes in version order.
/// A single server's keys only: on a cluster, the stream's slot is not the
/// key's.
///
/// Returns `{1, new version, stream length or -1}` or `{0, current version
/// or 0, -1}` (the length when ARGV[10] is not '').
/// KEYS: value, version, lease, marker, held[, stream]. ARGV: expected
/// version or '', token or '', payload, value ms, channel or '', tag[, key
/// text, queued payload, queued ms, '1' or ''].
const PUT: &str = r"
if holds(KEYS[5], ARGV[2]) then redis.call('DEL', KEYS[5]) end
local released = holds(KEYS[3], ARGV[2])
if released then redis.call('DEL', KEYS[3]) end
local cur = current(KEYS[1], KEYS[2])
if ARGV[1] ~= '' and cur ~= tonumber(ARGV[1]) then
  if released then announce(ARGV[5], 'r 0 ' .. ARGV[6]) end
  return {0, cur or 0, -1}
end
local v = advance(cur)
-- Formatted once: printing a number is a good part of the script's own work.
local digits = fmt(v)
local len = -1
if KEYS[6] then
  redis.call('XADD', KEYS[6], '*', 'k', ARGV[7], 'v', digits, 'd', ARGV[8], 't', ARGV[9])
  if ARGV[10] ~= '' then len = redis.call('XLEN', KEYS[6]) end
end
local p = ARGV[3]
redis.call('SET', KEYS[1], string.sub(p, 1, 1) .. string.rep('0', 20 - #digits) .. digits .. string.sub(p, 22), 'PX', ARGV[4])
redis.call('DEL', KEYS[2], KEYS[4])
announce(ARGV[5], 'w ' .. digits .. ' ' .. ARGV[6])
return {1, v, len}
";

/// Deletes the entry, marker, lease and held mark, advances the version
/// (voiding every load in flight's fencing token; a new load may start at
/// once), keeps it as a tombstone for the held time and announces. Returns
/// the new version. Client tracking tells only of a key that was modified,
/// and deleting a missing key modifies nothing: a missing entry is written
/// first, so a process loading the key (which read it missing) hears of the
/// invalidation too.
/// KEYS: value, version, lease, marker, held. ARGV: channel or '', held ms, tag.
const INVALIDATE: &str = r"
local v = advance(current(KEYS[1], KEYS[2]))
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], '') end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[2], fmt(v), 'PX', ARGV[2])
announce(ARGV[1], 'i ' .. fmt(v) .. ' ' .. ARGV[3])
return v
";

/// Quorum leases: marks the lease granted by a majority of the lock servers
/// in the data store and advances the key's version there (the fencing token
/// of the grant). The mark is the token, kept for the lease TTL, so that the
/// fenced write and the release give it back and announce it as they do a
/// single-server lease; whoever holds the quorum, the newest grant's mark wins.
/// Sets the held mark as `LEASE` does (the lock servers' locks lapse as the
/// data store's lease does, so the same rules tell a take-over).
/// Clears the marker and records the version as `LEASE` does.
/// Returns what a grant of `LEASE` does: `{1, new version, taken over, entry}`.
/// KEYS: lease, version, held, value, marker. ARGV: token, lease ms, held ms.
const FENCE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local took = pending(KEYS[3], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
redis.call('DEL', KEYS[5])
local v = advance(current(KEYS[4], KEYS[2]))
redis.call('SET', KEYS[2], fmt(v), 'PX', ARGV[3])
return {1, v, took, stored(KEYS[4]) or 0}
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

#[cfg(test)]
mod tests {
    use super::*;
    use herdguard_testkit::RedisServer;

    type Granted = (i64, u64, i64, u64);

    fn grant(scripts: &Scripts, conn: &mut redis::Connection, token: &str) -> Granted {
        scripts
            .lease
            .key("{k}:lease")
            .key("{k}:ver")
            .key("{k}:held")
            .key("{k}")
            .key("{k}:marker")
            .arg(token)
            .arg(5_000)
            .arg(10_000)
            .invoke(conn)
            .expect("LEASE")
    }

    /// The grant is safe to make twice, as `tracked_or` needs of what it sends
    /// again after a failure: the same token is granted again at the version
    /// its first grant gave; another token is refused.
    #[test]
    fn a_grant_made_again_with_its_token_is_granted_at_its_version() {
        let server = RedisServer::start().expect("redis-server");
        let mut conn = redis::Client::open(server.url())
            .and_then(|c| c.get_connection())
            .expect("connect");
        let scripts = Scripts::new();
        let first = grant(&scripts, &mut conn, "mine");
        assert_eq!(first.0, 1, "granted: {first:?}");
        let again = grant(&scripts, &mut conn, "mine");
        assert_eq!(
            (again.0, again.1),
            (1, first.1),
            "made again with its token: granted at the first grant's version"
        );
        assert_eq!(
            grant(&scripts, &mut conn, "theirs").0,
            0,
            "another token waits"
        );
    }
}
