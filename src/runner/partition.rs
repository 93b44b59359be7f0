//! `--partition count:K/N` and `hash:K/N`: splitting a suite across CI
//! machines the way cargo-nextest does. Every test lands in exactly one of
//! the N partitions, so running K = 1..=N covers the suite once.
//!
//! `count` deals the (sorted, filtered) tests out like cards: test i goes
//! to partition i mod N. `hash` places each test by a stable hash of its
//! name, so a test stays in its partition when others are added or removed.

use super::discover::Test;

/// `--partition count:K/N` (every Nth test from the Kth) or `hash:K/N`
/// (by a stable hash of the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    Count { k: u64, n: u64 },
    Hash { k: u64, n: u64 },
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Partition, String> {
        let bad =
            || format!("invalid partition {s:?}: expected count:K/N or hash:K/N with 1 <= K <= N");
        let (kind, kn) = s.split_once(':').ok_or_else(bad)?;
        let (k, n) = kn.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        match kind {
            "count" => Ok(Partition::Count { k, n }),
            "hash" => Ok(Partition::Hash { k, n }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partition::Count { k, n } => write!(f, "count:{k}/{n}"),
            Partition::Hash { k, n } => write!(f, "hash:{k}/{n}"),
        }
    }
}

impl Partition {
    /// Keeps the tests of this partition.
    pub fn select(&self, tests: Vec<Test>) -> Vec<Test> {
        tests
            .into_iter()
            .enumerate()
            .filter(|(i, t)| match *self {
                Partition::Count { k, n } => (*i as u64) % n == k - 1,
                Partition::Hash { k, n } => fnv1a(t.name.as_bytes()) % n == k - 1,
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
        for spec in ["count", "hash"] {
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
}
