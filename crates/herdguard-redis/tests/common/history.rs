//! The checker of the randomized fault test: reads the histories of every
//! worker process (and the faults injected) and verifies, for every call:
//!
//! 1. **No caller error** (only Redis is faulty; the origin never fails).
//! 2. **Bounded**: no call takes longer than `call_bound`.
//! 3. **Barriers**: no call returns a value older than the last `invalidate`
//!    or `insert` of its key that completed before the call started — in the
//!    same process at once, in another process once the change feed's bound
//!    (`hop`) has passed: a process serves its copies only while its feed has
//!    vouched, within that bound, that every notice sent before was handled —
//!    whatever happened meanwhile (a fault that kept the notice in Redis, the
//!    process paused or starved with the notice unread); otherwise it checks
//!    them against Redis, or, when Redis is unreachable, marks what it serves
//!    unconfirmed. A value is *older* than a barrier when its loader started before the
//!    barrier started (a load concurrent with the barrier is fenced, not
//!    older), or, for an inserted value, when its insert completed before the
//!    barrier started (concurrent writes may take effect in either order). An
//!    insert that returned an error is indeterminate, as in Jepsen: Redis may
//!    still run it after the caller's timeout, so its value may take effect at
//!    any later moment and is never older. Answers marked as possibly outdated
//!    (stale windows, or unconfirmed while Redis was unreachable) are
//!    documented exceptions, counted apart.
//! 4. **Every value came from somewhere**: a load or an insert in the history.
//! 5. **Coalescing**: origin calls per key per fresh period ≤ the number of
//!    processes. A period starts with a load and lasts one TTL, and is cut
//!    short by anything that legitimately voids the value: a barrier on the
//!    key (when it completes: a load running across it is voided by it; and
//!    one hop later, when its notice reaches the other processes), a fault,
//!    or a process's shared-store health changing. A period that starts while
//!    a barrier's notice is on its way may have twice that: a process may
//!    begin a load just before the notice arrives, and the notice voids it
//!    (the process cannot tell that load from an older one).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

/// One line of a worker's history (or of the fault driver).
#[derive(Clone, Debug)]
pub enum Record {
    Get {
        p: u64,
        key: String,
        start: u64,
        end: u64,
        /// `Ok((value, served))` or the error text.
        result: Result<(String, String), String>,
    },
    /// `insert` (with its value) or `invalidate` (without).
    Barrier {
        p: u64,
        key: String,
        start: u64,
        end: u64,
        ok: bool,
        inserted: Option<String>,
    },
    Load {
        p: u64,
        key: String,
        start: u64,
        value: String,
    },
    /// A shared-store health change of one process.
    Boundary { at: u64 },
    /// A fault injected (its start or its end).
    Fault { at: u64 },
}

impl Record {
    /// Parses a worker's JSON line; `None` for lines the checker does not use.
    pub fn parse(v: &serde_json::Value) -> Option<Record> {
        let s = |f: &str| v[f].as_str().map(str::to_string);
        let n = |f: &str| v[f].as_u64();
        Some(match v["kind"].as_str()? {
            "get" => Record::Get {
                p: n("p")?,
                key: s("key")?,
                start: n("start")?,
                end: n("end")?,
                result: match s("error") {
                    Some(e) => Err(e),
                    None => Ok((s("value")?, s("served")?)),
                },
            },
            "inv" | "ins" => Record::Barrier {
                p: n("p")?,
                key: s("key")?,
                start: n("start")?,
                end: n("end")?,
                ok: v["ok"].as_bool()?,
                inserted: s("value"),
            },
            "load" => Record::Load {
                p: n("p")?,
                key: s("key")?,
                start: n("start")?,
                value: s("value")?,
            },
            "health" => Record::Boundary { at: n("at")? },
            _ => return None,
        })
    }
}

/// What the checker allows.
#[derive(Copy, Clone, Debug)]
pub struct Bounds {
    /// Longest a call may take (ns).
    pub call_bound: u64,
    /// How long after a change another process may still serve its older
    /// copy (ns): the change feed's bound.
    pub hop: u64,
    /// Freshness of a value (ns).
    pub ttl: u64,
    /// Processes in the fleet.
    pub processes: usize,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub gets: usize,
    pub barriers: usize,
    pub failed_barriers: usize,
    pub loads: usize,
    pub outdated_allowed: usize,
    pub max_loads_in_a_period: usize,
    pub violations: Vec<String>,
}

/// Checks a whole history (see the module docs).
pub fn check(records: &[Record], b: Bounds) -> Verdict {
    let mut v = Verdict::default();
    // Where each value came from: when it was produced.
    let mut origin: HashMap<&str, u64> = HashMap::new();
    // Per key: completed barriers, as (end, start, process).
    let mut barriers: HashMap<&str, Vec<(u64, u64, u64)>> = HashMap::new();
    // Per key: when each barrier attempt ended (its notice is on its way for a hop).
    let mut notices: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut loads: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut boundaries: Vec<u64> = Vec::new();
    for r in records {
        match r {
            Record::Load {
                key, start, value, ..
            } => {
                v.loads += 1;
                origin.insert(value, *start);
                loads.entry(key).or_default().push(*start);
            }
            Record::Barrier {
                p,
                key,
                start,
                end,
                ok,
                inserted,
            } => {
                v.barriers += 1;
                if let Some(value) = inserted {
                    origin.insert(value, if *ok { *end } else { u64::MAX });
                }
                // Every attempt may void values in Redis, and a load running
                // across it is voided: the period ends when it completes — and,
                // for another process, when its notice arrives (a load started
                // in between may be voided by the notice). Only completed ones
                // bind callers.
                boundaries.push(*end);
                boundaries.push(end.saturating_add(b.hop));
                notices.entry(key).or_default().push(*end);
                if *ok {
                    barriers.entry(key).or_default().push((*end, *start, *p));
                } else {
                    v.failed_barriers += 1;
                }
            }
            Record::Boundary { at } | Record::Fault { at } => boundaries.push(*at),
            Record::Get { .. } => {}
        }
    }
    for list in barriers.values_mut() {
        list.sort_unstable();
    }
    boundaries.sort_unstable();

    for r in records {
        let Record::Get {
            p,
            key,
            start,
            end,
            result,
        } = r
        else {
            continue;
        };
        v.gets += 1;
        let took = end.saturating_sub(*start);
        if took > b.call_bound {
            v.violations.push(format!(
                "call on {key} in process {p} took {} ms",
                took / 1_000_000
            ));
        }
        let (value, served) = match result {
            Ok(ok) => ok,
            Err(e) => {
                v.violations
                    .push(format!("caller error on {key} in process {p}: {e}"));
                continue;
            }
        };
        let Some(&produced) = origin.get(value.as_str()) else {
            v.violations
                .push(format!("{key} answered {value}, which nobody produced"));
            continue;
        };
        // The latest barrier that binds this call: completed before it started
        // (in another process, one hop before).
        let binding = barriers.get(key.as_str()).and_then(|list| {
            list.iter()
                .filter(|(b_end, _, b_p)| {
                    let allowance = if b_p == p { 0 } else { b.hop };
                    b_end.saturating_add(allowance) < *start
                })
                .max_by_key(|(_, b_start, _)| *b_start)
        });
        if let Some(&(b_end, b_start, b_p)) = binding {
            if produced < b_start {
                if served_may_be_outdated(served) {
                    v.outdated_allowed += 1;
                } else {
                    v.violations.push(format!(
                        "{key} in process {p} at {start}: answered {value} ({served}), produced {} ms \
                         before a barrier of process {b_p} that ran {b_start}..{b_end}, {} ms before the call",
                        (b_start - produced) / 1_000_000,
                        (start - b_end) / 1_000_000
                    ));
                }
            }
        }
    }

    for (key, starts) in &mut loads {
        starts.sort_unstable();
        let notices = notices.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let mut period_start = 0;
        let mut in_period = 0;
        let mut allowed = b.processes;
        for &s in starts.iter() {
            let cut = boundaries
                .partition_point(|&t| t <= s)
                .checked_sub(1)
                .is_some_and(|i| boundaries[i] > period_start);
            if in_period == 0 || cut || s >= period_start + b.ttl {
                period_start = s;
                in_period = 0;
                let in_notice = notices
                    .iter()
                    .any(|&end| end <= s && s < end.saturating_add(b.hop));
                allowed = if in_notice {
                    2 * b.processes
                } else {
                    b.processes
                };
            }
            in_period += 1;
            v.max_loads_in_a_period = v.max_loads_in_a_period.max(in_period);
            if in_period > allowed {
                v.violations.push(format!(
                    "{key}: {in_period} origin calls in one fresh period (from {period_start}) \
                     with {} processes",
                    b.processes
                ));
            }
        }
    }
    v
}

/// Matches `Served::may_be_outdated` by the served name the workers print.
fn served_may_be_outdated(served: &str) -> bool {
    matches!(
        served,
        "stale_while_revalidate" | "stale_on_error" | "stale_on_timeout" | "unconfirmed"
    )
}

/// Counts of the injected faults, by kind.
pub type FaultCounts = BTreeMap<&'static str, usize>;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bounds() -> Bounds {
        Bounds {
            call_bound: 2000 * MS,
            hop: 100 * MS,
            ttl: 1000 * MS,
            processes: 2,
        }
    }

    fn get(p: u64, start: u64, value: &str, served: &str) -> Record {
        Record::Get {
            p,
            key: "k".into(),
            start: start * MS,
            end: start * MS + MS,
            result: Ok((value.into(), served.into())),
        }
    }

    fn load(p: u64, start: u64, value: &str) -> Record {
        Record::Load {
            p,
            key: "k".into(),
            start: start * MS,
            value: value.into(),
        }
    }

    fn inv(p: u64, start: u64, end: u64) -> Record {
        Record::Barrier {
            p,
            key: "k".into(),
            start: start * MS,
            end: end * MS,
            ok: true,
            inserted: None,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = [
            load(1, 0, "a"),
            get(1, 10, "a", "loaded"),
            get(2, 20, "a", "shared"),
            inv(1, 30, 31),
            load(2, 40, "b"),
            get(2, 41, "b", "loaded"),
            get(1, 50, "b", "shared"),
        ];
        let v = check(&h, bounds());
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.gets, v.loads, v.barriers), (4, 2, 1));
    }

    #[test]
    fn an_older_value_after_a_barrier_is_a_violation() {
        let h = [
            load(1, 0, "a"),
            inv(1, 30, 31),
            // Same process, right after: no allowance.
            get(1, 32, "a", "hit"),
        ];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        // Another process, within the hop: allowed; past it: not.
        let h = [load(1, 0, "a"), inv(1, 30, 31), get(2, 100, "a", "hit")];
        assert!(check(&h, bounds()).violations.is_empty());
        let h = [load(1, 0, "a"), inv(1, 30, 31), get(2, 200, "a", "hit")];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        // A fault right after the barrier extends nothing: the bound holds.
        let h = [
            load(1, 0, "a"),
            inv(1, 30, 31),
            Record::Fault { at: 40 * MS },
            get(2, 200, "a", "hit"),
        ];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        // Marked as possibly outdated: counted, not a violation.
        let h = [
            load(1, 0, "a"),
            inv(1, 30, 31),
            get(1, 200, "a", "unconfirmed"),
        ];
        let v = check(&h, bounds());
        assert!(v.violations.is_empty());
        assert_eq!(v.outdated_allowed, 1);
    }

    #[test]
    fn a_load_concurrent_with_the_barrier_may_be_returned() {
        // The load started after the barrier started: not older than it.
        let h = [inv(1, 30, 40), load(2, 35, "b"), get(1, 50, "b", "shared")];
        assert!(check(&h, bounds()).violations.is_empty());
    }

    #[test]
    fn an_inserted_value_is_as_new_as_its_insert() {
        let ins = |start, end, value: &str| Record::Barrier {
            p: 1,
            key: "k".into(),
            start: start * MS,
            end: end * MS,
            ok: true,
            inserted: Some(value.into()),
        };
        let h = [ins(10, 11, "x"), get(1, 20, "x", "hit")];
        assert!(check(&h, bounds()).violations.is_empty());
        let h = [ins(10, 11, "x"), ins(20, 21, "y"), get(1, 30, "x", "hit")];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        // Overlapping: the insert may take effect after the invalidation.
        let h = [ins(10, 20, "x"), inv(1, 15, 16), get(1, 30, "x", "hit")];
        assert!(check(&h, bounds()).violations.is_empty());
        // An insert that failed may land any time later: indeterminate.
        let failed = Record::Barrier {
            p: 2,
            key: "k".into(),
            start: 0,
            end: MS,
            ok: false,
            inserted: Some("z".into()),
        };
        let h = [failed, inv(1, 15, 16), get(1, 30, "z", "shared")];
        assert!(check(&h, bounds()).violations.is_empty());
    }

    #[test]
    fn errors_slow_calls_and_unknown_values_are_violations() {
        let h = [Record::Get {
            p: 1,
            key: "k".into(),
            start: 0,
            end: MS,
            result: Err("boom".into()),
        }];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        let h = [
            load(1, 0, "a"),
            Record::Get {
                p: 1,
                key: "k".into(),
                start: 0,
                end: 3000 * MS,
                result: Ok(("a".into(), "loaded".into())),
            },
        ];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
        let h = [get(1, 0, "ghost", "hit")];
        assert_eq!(check(&h, bounds()).violations.len(), 1);
    }

    #[test]
    fn more_loads_than_processes_in_one_period_is_a_stampede() {
        let h = [load(1, 0, "a"), load(2, 10, "b"), load(1, 20, "c")];
        let v = check(&h, bounds());
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(v.max_loads_in_a_period, 3);
        // A TTL later, or after a boundary, a new period starts.
        let h = [load(1, 0, "a"), load(2, 10, "b"), load(1, 1000, "c")];
        assert!(check(&h, bounds()).violations.is_empty());
        let h = [
            load(1, 0, "a"),
            load(2, 10, "b"),
            Record::Boundary { at: 15 * MS },
            load(1, 20, "c"),
        ];
        assert!(check(&h, bounds()).violations.is_empty());
        // Starting while a barrier's notice travels: twice the processes, no more.
        let mut h = vec![inv(1, 0, 1)];
        h.extend((0..4).map(|i| load(1 + i % 2, 2 + i, "x")));
        assert!(check(&h, bounds()).violations.is_empty());
        h.push(load(1, 7, "y"));
        assert_eq!(check(&h, bounds()).violations.len(), 1);
    }
}
