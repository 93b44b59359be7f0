//! `--partition count:K/N` and `hash:K/N`: splitting a suite across CI
//! machines the way cargo-nextest does. Every test lands in exactly one of
//! the N partitions, so running K = 1..=N covers the suite once.
//!
//! `count` deals the (sorted, filtered) tests out like cards: test i goes
//! to partition i mod N. `hash` places each test by a stable hash of its
//! name, so a test stays in its partition when others are added or removed.
//! `duration` balances the partitions by the tests' durations in earlier
//! runs (the suite's history): longest first, each to the partition with
//! the least time so far; a test never timed counts as the mean of those
//! that were. Every shard must see the same history to agree.

use super::discover::Test;

/// `--partition count:K/N` (every Nth test from the Kth) or `hash:K/N`
/// (by a stable hash of the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    Count { k: u64, n: u64 },
    Hash { k: u64, n: u64 },
    Duration { k: u64, n: u64 },
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Partition, String> {
        let bad = || {
            format!("invalid partition {s:?}: expected count:K/N, hash:K/N or duration:K/N with 1 <= K <= N")
        };
        let (kind, kn) = s.split_once(':').ok_or_else(bad)?;
        let (k, n) = kn.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        match kind {
            "count" => Ok(Partition::Count { k, n }),
            "hash" => Ok(Partition::Hash { k, n }),
            "duration" => Ok(Partition::Duration { k, n }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partition::Count { k, n } => write!(f, "count:{k}/{n}"),
            Partition::Hash { k, n } => write!(f, "hash:{k}/{n}"),
            Partition::Duration { k, n } => write!(f, "duration:{k}/{n}"),
        }
    }
}

impl Partition {
    /// Keeps the tests of this partition; `duration` gives a test's
    /// earlier duration in seconds, if it has one.
    pub fn select_by(&self, tests: Vec<Test>, duration: impl Fn(&str) -> Option<f64>) -> Vec<Test> {
        let Partition::Duration { k, n } = *self else {
            return self.select(tests);
        };
        let known: Vec<f64> = tests.iter().filter_map(|t| duration(&t.name)).collect();
        let mean = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let mut order: Vec<(usize, f64)> = tests
            .iter()
            .enumerate()
            .map(|(i, t)| (i, duration(&t.name).unwrap_or(mean)))
            .collect();
        // Longest first; equal ones in suite order, so every shard agrees.
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut load = vec![0.0f64; n as usize];
        let mut mine = vec![false; tests.len()];
        for (i, d) in order {
            let (bin, _) = load
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .expect("a partition count is at least 1");
            load[bin] += d;
            mine[i] = bin as u64 == k - 1;
        }
        tests
            .into_iter()
            .zip(mine)
            .filter(|(_, m)| *m)
            .map(|(t, _)| t)
            .collect()
    }

    /// Keeps the tests of this partition (`duration` as if no test had
    /// run before).
    pub fn select(&self, tests: Vec<Test>) -> Vec<Test> {
        let (k, n, by_hash) = match *self {
            Partition::Count { k, n } => (k, n, false),
            Partition::Hash { k, n } => (k, n, true),
            Partition::Duration { .. } => return self.select_by(tests, |_| None),
        };
        tests
            .into_iter()
            .enumerate()
            .filter(|(i, t)| {
                let slot = if by_hash {
                    fnv1a(t.name.as_bytes())
                } else {
                    *i as u64
                };
                slot % n == k - 1
            })
            .map(|(_, t)| t)
            .collect()
    }
}

/// FNV-1a: stable across runs and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_split_every_test_exactly_once() {
        let tests: Vec<Test> = (0..10)
            .map(|i| Test {
                path: format!("t{i}.rhai").into(),
                name: format!("t{i}.rhai"),
                ..Test::default()
            })
            .collect();
        for spec in ["count", "hash", "duration"] {
            let mut all: Vec<Test> = (1..=3)
                .flat_map(|k| {
                    let p: Partition = format!("{spec}:{k}/3").parse().unwrap();
                    p.select(tests.clone())
                })
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            let mut want = tests.clone();
            want.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(all, want);
        }
        assert!("count:0/3".parse::<Partition>().is_err());
        assert!("count:4/3".parse::<Partition>().is_err());
        assert!("slice:1/3".parse::<Partition>().is_err());
    }

    #[test]
    fn duration_partitions_balance_earlier_times() {
        let tests: Vec<Test> = (0..6)
            .map(|i| Test {
                path: format!("t{i}.rhai").into(),
                name: format!("t{i}.rhai"),
                ..Test::default()
            })
            .collect();
        // One long test and five short ones: the long one alone.
        let time = |name: &str| Some(if name == "t3.rhai" { 50.0 } else { 10.0 });
        let p = |k| Partition::Duration { k, n: 2 }.select_by(tests.clone(), time);
        let names = |v: Vec<Test>| v.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(p(1)), ["t3.rhai"]);
        assert_eq!(p(2).len(), 5);
        // Without a history: as many tests in each.
        let q = |k| Partition::Duration { k, n: 3 }.select(tests.clone()).len();
        assert_eq!([q(1), q(2), q(3)], [2, 2, 2]);
    }
}
