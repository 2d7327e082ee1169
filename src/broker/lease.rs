//! Camera leases: compare-and-set claims, renewals, fencing, and the fair-share rule.
//!
//! A lease is the KV key `affect_leases.<camera>`; the bucket's `max_age` is the lease TTL
//! (nats-server 2.9 has no per-key TTL). A claim is `update(key, value, expected)` with
//! `expected` = 0 for an absent key or the tombstone's revision for a deleted one, so of two
//! workers claiming at once exactly one wins (`create` in async-nats falls back to a plain
//! put over a deleted key, which is not atomic). The revision the claim returns is the
//! fencing token written into every record (`lease_rev`). Renewals are `update` with the last
//! revision; a worker whose renewals fail stops publishing and stops the camera
//! [`Timing::fence`] after its last successful renew, before the server can expire the lease
//! ([`Timing::ttl`] after it) and another worker can claim it.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Lease timing, derived from the lease bucket's TTL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// The bucket's `max_age`: a lease not renewed for this long vanishes.
    pub ttl: Duration,
    /// How often a held lease is renewed.
    pub renew: Duration,
    /// How long after its last successful renew a worker stops publishing a camera and
    /// stops its pipeline (well before `ttl`).
    pub fence: Duration,
    /// How often the worker looks at the registry and the leases.
    pub scan: Duration,
}

impl Timing {
    /// Timing for a lease TTL: renew every TTL/8, fence at 3/4 of it.
    pub fn for_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            renew: ttl / 8,
            fence: ttl * 3 / 4,
            scan: Duration::from_millis(250),
        }
    }
}

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holder.
    pub worker: String,
    /// The camera's state on the holder: connecting, live, reconnecting, failed, ...
    pub state: String,
    /// Why (failed, reconnecting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The revision of the claim (the `lease_rev` of the records), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_rev: Option<u64>,
    /// The holder's process instance (random per process): tells a worker its own writes
    /// from those of an earlier process of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl LeaseValue {
    /// True when this value is a claim (not yet renewed) written by `worker`'s `instance`.
    pub fn is_claim_of(&self, worker: &str, instance: &str) -> bool {
        self.worker == worker
            && self.instance.as_deref() == Some(instance)
            && self.lease_rev.is_none()
    }
}

impl LeaseValue {
    /// The value as JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The outcome of a claim or renewal.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas {
    /// Written: the new revision.
    Won(u64),
    /// Someone else wrote the key first (or it expired): the lease is not ours.
    Lost,
    /// No answer (broker unreachable, timeout): try again.
    Failed(String),
}

/// `update(key, value, expected)` as a [`Cas`] outcome.
pub async fn compare_and_set(store: &Store, key: &str, value: Bytes, expected: u64) -> Cas {
    match store.update(key, value, expected).await {
        Ok(revision) => Cas::Won(revision),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Cas::Lost,
        Err(e) => Cas::Failed(e.to_string()),
    }
}

/// Reads back a key after a compare-and-set was refused: `Won(revision)` when its value is our
/// own write (`ours`), which happens when the broker stored it but its ack was lost (a broker
/// restart, or a request the client delivered after it had timed out); else `Lost`.
async fn read_back(store: &Store, key: &str, ours: impl Fn(&LeaseValue) -> bool) -> Cas {
    match store.entry(key).await {
        Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
            match serde_json::from_slice::<LeaseValue>(&entry.value) {
                Ok(v) if ours(&v) => Cas::Won(entry.revision),
                _ => Cas::Lost,
            }
        }
        Ok(_) => Cas::Lost,
        Err(e) => Cas::Failed(e.to_string()),
    }
}

/// Claims a camera: `update` with `expected` (0 for an absent key, the tombstone's revision
/// for a deleted one); a refusal whose value is our own claim counts as won.
pub async fn claim(
    store: &Store,
    key: &str,
    value: Bytes,
    expected: u64,
    worker: &str,
    instance: &str,
) -> Cas {
    match compare_and_set(store, key, value, expected).await {
        Cas::Lost => read_back(store, key, |v| v.is_claim_of(worker, instance)).await,
        other => other,
    }
}

/// Renews our lease (`update` with the last revision we know). When the server says the
/// revision moved, the key is read back: a value under our name, instance and claim is our
/// own write whose ack was lost, and its revision is adopted; anything else means the lease
/// is gone.
pub async fn renew(
    store: &Store,
    key: &str,
    value: Bytes,
    expected: u64,
    worker: &str,
    instance: &str,
    claim_rev: u64,
) -> Cas {
    match compare_and_set(store, key, value, expected).await {
        Cas::Lost => {
            read_back(store, key, |v| {
                v.worker == worker
                    && v.instance.as_deref() == Some(instance)
                    && v.lease_rev == Some(claim_rev)
            })
            .await
        }
        other => other,
    }
}

/// Deletes our lease (a tombstone, so another worker claims at once), only while it is still
/// ours: at `revision`, or at a later revision that holds our own renewal (one that was in
/// flight when we decided to let go).
pub async fn release(
    store: &Store,
    key: &str,
    revision: u64,
    worker: &str,
    instance: &str,
) -> Result<(), String> {
    let mut revision = revision;
    let mut last = String::new();
    for _ in 0..3 {
        match store.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        match read_back(store, key, |v| {
            v.worker == worker && v.instance.as_deref() == Some(instance)
        })
        .await
        {
            Cas::Won(current) if current != revision => revision = current,
            _ => break,
        }
    }
    Err(last)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The fence of one held camera, shared by the control loop (which moves it forward on each
/// successful renew) and the thread that hands the camera's records to the publisher (which
/// drops records produced past it).
#[derive(Debug)]
pub struct LeaseClock {
    deadline_ms: AtomicU64,
    lost: AtomicBool,
}

impl LeaseClock {
    /// A clock valid until `deadline`.
    pub fn new(deadline: Instant) -> Self {
        let clock = Self {
            deadline_ms: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        };
        clock.extend(deadline);
        clock
    }

    /// A clock that never fences (benchmarks).
    pub fn unbounded() -> Self {
        Self {
            deadline_ms: AtomicU64::new(u64::MAX),
            lost: AtomicBool::new(false),
        }
    }

    /// Moves the deadline to `deadline` (never backwards).
    pub fn extend(&self, deadline: Instant) {
        let ms = deadline.saturating_duration_since(epoch()).as_millis() as u64;
        self.deadline_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Marks the lease lost: nothing more is published under it.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// True while records may be published under this lease.
    pub fn valid(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && (epoch().elapsed().as_millis() as u64) < self.deadline_ms.load(Ordering::SeqCst)
    }
}

/// A live worker as the fair-share rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Its `--max-cameras`.
    pub max_cameras: u32,
}

/// What the fair-share rule tells a worker to do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Claim these free cameras (in this order).
    Claim(Vec<String>),
    /// Give this camera back.
    Release(String),
    /// Nothing.
    Hold,
}

/// The most cameras any worker should hold: the least level L with Σ min(max_w, L) ≥ cameras.
fn level(cameras: usize, peers: &[Peer]) -> usize {
    let capacity: usize = peers.iter().map(|p| p.max_cameras as usize).sum();
    let n = cameras.min(capacity);
    (0..=n)
        .find(|l| {
            peers
                .iter()
                .map(|p| (p.max_cameras as usize).min(*l))
                .sum::<usize>()
                >= n
        })
        .unwrap_or(n)
}

/// A stable pseudo-random order per worker, so workers claiming at once mostly pick
/// different cameras.
fn preference(worker: &str, camera: &str) -> u64 {
    // FNV-1a: stable across processes and versions (unlike the std hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in worker.bytes().chain([0]).chain(camera.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The fair-share rule with hysteresis. `me` holds `mine` (oldest claim first); `holders`
/// maps the cameras others hold to their holder; `peers` are the live workers, `me` among
/// them. A worker claims free cameras while it is below its share and no hungrier worker
/// waits; the most loaded worker gives one camera back when it holds two more than the
/// least loaded worker that wants more, so once stable the loads differ by at most one and a
/// camera is never handed back and forth.
pub fn decide(
    me: &str,
    mine: &[String],
    cameras: &[String],
    holders: &HashMap<String, String>,
    peers: &[Peer],
) -> Decision {
    let Some(my_peer) = peers.iter().find(|p| p.name == me) else {
        return Decision::Hold;
    };
    let share = level(cameras.len(), peers);
    let mut load: BTreeMap<&str, usize> = peers.iter().map(|p| (p.name.as_str(), 0)).collect();
    for camera in cameras {
        if let Some(holder) = holders.get(camera)
            && holder != me
            && let Some(n) = load.get_mut(holder.as_str())
        {
            *n += 1;
        }
    }
    let my_load = mine.iter().filter(|c| cameras.contains(c)).count();
    load.insert(me, my_load);
    let cap = |p: &Peer| (p.max_cameras as usize).min(share);
    let hungry_min = peers
        .iter()
        .filter(|p| load.get(p.name.as_str()).copied().unwrap_or(0) < cap(p))
        .map(|p| load.get(p.name.as_str()).copied().unwrap_or(0))
        .min();
    let mut free: Vec<&String> = cameras
        .iter()
        .filter(|c| !holders.contains_key(*c) && !mine.contains(c))
        .collect();
    if !free.is_empty() {
        let room = cap(my_peer).saturating_sub(my_load);
        if room > 0 && hungry_min.is_some_and(|m| my_load <= m) {
            free.sort_by_key(|c| preference(me, c));
            return Decision::Claim(free.into_iter().take(room).cloned().collect());
        }
        return Decision::Hold;
    }
    let Some(hungry_min) = hungry_min else {
        // Nobody wants more; still give back what is above our own cap.
        return match mine.last() {
            Some(last) if my_load > cap(my_peer) => Decision::Release(last.clone()),
            _ => Decision::Hold,
        };
    };
    // The most loaded worker (ties: the first name) gives one back.
    let most = load
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(name, n)| (*name, *n));
    match (most, mine.last()) {
        (Some((name, n)), Some(last)) if name == me && n >= hungry_min + 2 => {
            Decision::Release(last.clone())
        }
        _ => Decision::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(names: &[(&str, u32)]) -> Vec<Peer> {
        names
            .iter()
            .map(|(n, m)| Peer {
                name: (*n).into(),
                max_cameras: *m,
            })
            .collect()
    }

    fn cams(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    /// Runs the rule for every worker in turn until nothing changes; returns the loads.
    fn settle(
        cameras: &[String],
        peers: &[Peer],
        mut held: BTreeMap<String, Vec<String>>,
        moves: &mut usize,
    ) -> BTreeMap<String, Vec<String>> {
        for _ in 0..100 {
            let mut changed = false;
            for p in peers {
                let holders: HashMap<String, String> = held
                    .iter()
                    .flat_map(|(w, cs)| cs.iter().map(move |c| (c.clone(), w.clone())))
                    .collect();
                let mine = held.get(&p.name).cloned().unwrap_or_default();
                match decide(&p.name, &mine, cameras, &holders, peers) {
                    Decision::Claim(list) => {
                        held.entry(p.name.clone()).or_default().extend(list);
                        changed = true;
                    }
                    Decision::Release(c) => {
                        held.get_mut(&p.name).unwrap().retain(|x| *x != c);
                        *moves += 1;
                        changed = true;
                    }
                    Decision::Hold => {}
                }
            }
            if !changed {
                return held;
            }
        }
        panic!("the rule does not settle: {held:?}");
    }

    fn spread(held: &BTreeMap<String, Vec<String>>, peers: &[Peer]) -> (usize, usize, usize) {
        let loads: Vec<usize> = peers
            .iter()
            .map(|p| held.get(&p.name).map_or(0, Vec::len))
            .collect();
        (
            *loads.iter().min().unwrap(),
            *loads.iter().max().unwrap(),
            loads.iter().sum(),
        )
    }

    #[test]
    fn cameras_spread_evenly_and_a_joining_worker_takes_its_share_in_few_moves() {
        let cameras = cams(4);
        let two = peers(&[("a", 100), ("b", 100)]);
        let mut moves = 0;
        let held = settle(&cameras, &two, BTreeMap::new(), &mut moves);
        assert_eq!(spread(&held, &two), (2, 2, 4));
        assert_eq!(moves, 0);
        // A third joins: one camera moves to it, nothing else.
        let three = peers(&[("a", 100), ("b", 100), ("c", 100)]);
        let held = settle(&cameras, &three, held, &mut moves);
        assert_eq!(spread(&held, &three), (1, 2, 4));
        assert_eq!(moves, 1);
        // One worker alone takes everything, then a second joins: two moves.
        let one = peers(&[("a", 100)]);
        let mut moves = 0;
        let held = settle(&cams(5), &one, BTreeMap::new(), &mut moves);
        assert_eq!(spread(&held, &one), (5, 5, 5));
        let held = settle(&cams(5), &two, held, &mut moves);
        assert_eq!(spread(&held, &two), (2, 3, 5));
        assert_eq!(moves, 2);
    }

    #[test]
    fn max_cameras_caps_a_worker_and_the_others_take_the_rest() {
        let cameras = cams(5);
        let p = peers(&[("a", 1), ("b", 100), ("c", 100)]);
        let mut moves = 0;
        let held = settle(&cameras, &p, BTreeMap::new(), &mut moves);
        assert_eq!(held["a"].len(), 1);
        assert_eq!(held["b"].len() + held["c"].len(), 4);
        assert!(held["b"].len().abs_diff(held["c"].len()) <= 1);
        // More cameras than all the workers may hold: the rest stay free.
        let small = peers(&[("a", 1), ("b", 2)]);
        let held = settle(&cameras, &small, BTreeMap::new(), &mut moves);
        assert_eq!(spread(&held, &small).2, 3);
    }

    #[test]
    fn workers_claiming_at_once_prefer_different_cameras() {
        let cameras = cams(8);
        let mut a: Vec<&String> = cameras.iter().collect();
        let mut b = a.clone();
        a.sort_by_key(|c| preference("worker-a", c));
        b.sort_by_key(|c| preference("worker-b", c));
        assert_ne!(a[..2], b[..2]);
    }

    #[test]
    fn the_clock_fences_after_its_deadline_and_when_lost() {
        let clock = LeaseClock::new(Instant::now() + Duration::from_millis(50));
        assert!(clock.valid());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!clock.valid());
        clock.extend(Instant::now() + Duration::from_secs(5));
        assert!(clock.valid());
        clock.lose();
        assert!(!clock.valid());
        let t = Timing::for_ttl(Duration::from_secs(8));
        assert_eq!(t.renew, Duration::from_secs(1));
        assert_eq!(t.fence, Duration::from_secs(6));
    }
}
