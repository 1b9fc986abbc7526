//! Seeded mutations of real inputs, for the hostile-input tests: bit flips,
//! bytes set to 0x00/0xff/random, truncation, chunks duplicated, deleted or
//! spliced in from another seed, and huge numbers written over the digits
//! of numeric fields (tar's octal sizes, PAX `size=`, JSON numbers) or as
//! binary integers. Case `i` of a seed list is always the same bytes, so a
//! failure is replayed by its number.
//!
//! `run` feeds each case to a parser inside `catch_unwind`, on a worker
//! thread watched for hangs, and tracks the largest single allocation the
//! case made against what its size justifies.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

/// splitmix64: small, fast, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Digits that make a length or count absurd, in the bases parsers use.
const HUGE_TEXT: &[&str] = &[
    "99999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "4294967296",
    "77777777777",
    "777777777777777777777",
    "-1",
    "0",
    "1e308",
];

/// Binary integers that break offsets and counts (written little endian).
const HUGE_BINARY: &[u64] = &[
    u64::MAX,
    u32::MAX as u64,
    0x8000_0000,
    0x7fff_ffff,
    0x1_0000_0000,
    1 << 40,
    0,
    1,
];

/// Case `case` of `seeds`: one seed, mutated one to four times.
pub fn mutate(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    mutate_with(seeds, case, 11)
}

/// Like `mutate`, but the length stays (flips, bytes set, numbers written
/// over), for formats that check their length first (layer indexes).
pub fn mutate_in_place(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    let mut data = mutate_with(seeds, case, 3);
    let mut rng = Rng::new(case ^ 0x5eed);
    if rng.below(2) == 0 {
        mutate_once(&mut data, seeds, &mut rng, 9);
    }
    data
}

/// Mutations `0..kinds` of `mutate_once` (the first three keep the length).
fn mutate_with(seeds: &[Vec<u8>], case: u64, kinds: usize) -> Vec<u8> {
    let mut rng = Rng::new(case.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x006c_6179_6572_6673);
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let kind = rng.below(kinds);
        mutate_once(&mut data, seeds, &mut rng, kind);
    }
    data
}

fn mutate_once(data: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng, kind: usize) {
    let len = data.len();
    match kind {
        0 | 1 => {
            // Several bit flips: most of what disk and network damage does.
            for _ in 0..1 + rng.below(8) {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            if len > 0 {
                let i = rng.below(len);
                data[i] = match rng.below(3) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
        }
        3 => data.truncate(rng.below(len + 1)),
        4 => {
            // A chunk duplicated somewhere else.
            if len > 0 {
                let (a, n) = chunk(len, rng);
                let piece = data[a..a + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
        }
        5 => {
            if len > 0 {
                let (a, n) = chunk(len, rng);
                data.drain(a..a + n);
            }
        }
        6 => {
            // The start of this input, the rest of another.
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        7 | 8 => huge_number(data, rng),
        9 => {
            if len >= 8 {
                let v = HUGE_BINARY[rng.below(HUGE_BINARY.len())];
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let at = rng.below(len - width + 1);
                data[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        _ => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(64);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, junk);
        }
    }
}

/// A chunk `(start, len)` of a non-empty input, mostly short.
fn chunk(len: usize, rng: &mut Rng) -> (usize, usize) {
    let a = rng.below(len);
    let max = (len - a).min(if rng.below(4) == 0 { len } else { 1024 });
    (a, 1 + rng.below(max))
}

/// Writes an absurd number over a run of digits: in place with the same
/// width (fixed tar fields: all 7s or all 9s), or replacing the run.
fn huge_number(data: &mut Vec<u8>, rng: &mut Rng) {
    let runs: Vec<(usize, usize)> = digit_runs(data);
    if runs.is_empty() {
        return;
    }
    let (start, n) = runs[rng.below(runs.len())];
    match rng.below(3) {
        0 => data[start..start + n].fill(b'7'),
        1 => data[start..start + n].fill(b'9'),
        _ => {
            let t = HUGE_TEXT[rng.below(HUGE_TEXT.len())].as_bytes();
            data.splice(start..start + n, t.iter().copied());
        }
    }
}

/// Where runs of ASCII digits are (at most a few thousand, spread out).
fn digit_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() && runs.len() < 4096 {
        if data[i].is_ascii_digit() {
            let s = i;
            while i < data.len() && data[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i - s));
        } else {
            i += 1;
        }
    }
    runs
}

/// Odd cases: a structural mutation of a JSON seed (values made huge,
/// negative, empty, of another type, long or with control characters; keys
/// removed; arrays repeated; subtrees moved), written back as JSON. Even
/// cases, and seeds that are not JSON: `mutate`. A seed may start with one
/// byte that is not JSON (a selector), which is kept.
pub fn mutate_json(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    if case.is_multiple_of(2) {
        return mutate(seeds, case);
    }
    let mut rng = Rng::new(case.wrapping_mul(0x9e37_79b9) ^ 0x4a53_4f4e);
    let seed = &seeds[rng.below(seeds.len())];
    let (prefix, json) = match seed.first() {
        Some(b'{' | b'[' | b' ' | b'\n') | None => (&seed[..0], &seed[..]),
        Some(_) => seed.split_at(1),
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return mutate(seeds, case);
    };
    for _ in 0..1 + rng.below(3) {
        let donor = nth_node(&mut v.clone(), rng.below(count_nodes(&v)))
            .map(|n| n.clone())
            .unwrap_or_default();
        let at = rng.below(count_nodes(&v));
        if let Some(node) = nth_node(&mut v, at) {
            mutate_node(node, donor, &mut rng);
        }
    }
    let mut out = prefix.to_vec();
    out.extend(serde_json::to_vec(&v).unwrap_or_default());
    out
}

fn count_nodes(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count_nodes).sum(),
        serde_json::Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th node of `v` in depth-first order.
fn nth_node(v: &mut serde_json::Value, mut n: usize) -> Option<&mut serde_json::Value> {
    if n == 0 {
        return Some(v);
    }
    n -= 1;
    let children: Vec<&mut serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter_mut().collect(),
        serde_json::Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for c in children {
        let size = count_nodes(c);
        if n < size {
            return nth_node(c, n);
        }
        n -= size;
    }
    None
}

fn mutate_node(node: &mut serde_json::Value, donor: serde_json::Value, rng: &mut Rng) {
    use serde_json::{Value, json};
    *node = match rng.below(9) {
        0 => [
            json!(u64::MAX),
            json!(-1),
            json!(1e308),
            json!(9_007_199_254_740_993u64),
            json!(99_999_999_999_999u64),
            json!(0),
        ][rng.below(6)]
        .clone(),
        1 => Value::String(
            [
                String::new(),
                "a".repeat(100_000),
                "two\nlines\r\u{0}".into(),
                "../../../etc/passwd".into(),
                format!("sha256:{}", "a".repeat(64)),
                "/".into(),
                "sha256:".into(),
                "\u{202e}\u{ffff}".into(),
            ][rng.below(8)]
            .clone(),
        ),
        2 => Value::Null,
        3 => Value::Bool(rng.below(2) == 0),
        4 => match rng.below(2) {
            0 => json!([]),
            _ => json!({}),
        },
        5 => match node.take() {
            Value::Array(a) if !a.is_empty() => {
                let times = 1 + rng.below(100);
                Value::Array(a.iter().cycle().take(a.len() * times).cloned().collect())
            }
            Value::Object(mut o) if !o.is_empty() => {
                let key = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                o.remove(&key);
                Value::Object(o)
            }
            other => json!([other]),
        },
        6 => donor,
        7 => json!([node.take()]),
        _ => match node.take() {
            Value::String(s) => Value::String(format!("{s}{s}")),
            Value::Number(_) => json!(-9_223_372_036_854_775_808i64),
            other => other,
        },
    };
}

/// How many cases per parser: `default`, or `LAYERFS_MUTATIONS` by hand.
pub fn count(default: u64) -> u64 {
    std::env::var("LAYERFS_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where case numbers start: 0, or `LAYERFS_MUTATION_START` to explore others.
fn first_case() -> u64 {
    std::env::var("LAYERFS_MUTATION_START")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A case may hang only this long before the test calls it a hang. Generous:
/// it detects loops, it does not time anything.
const HANG: Duration = Duration::from_secs(20);

/// The largest single allocation an input of `len` bytes justifies: fixed
/// buffers, plus what a compressed input may legitimately expand to.
pub fn allocation_budget(len: usize) -> usize {
    (16 << 20) + len.saturating_mul(1100)
}

enum Outcome {
    Ok,
    Err(String),
    Panic(String),
    TooLarge(usize),
}

/// Feeds `count` cases of `seeds` to `check` (Ok, or Err with the error's
/// Display) and fails on a panic, a hang, a multi-line error or an
/// allocation larger than the input justifies. Prints the tally.
pub fn run(
    name: &str,
    seeds: Vec<Vec<u8>>,
    count: u64,
    check: impl Fn(&[u8]) -> Result<(), String> + Send + 'static,
) {
    run_with(name, seeds, count, mutate, check)
}

/// `run` with another mutator (`mutate_in_place`).
pub fn run_with(
    name: &str,
    seeds: Vec<Vec<u8>>,
    count: u64,
    mutator: fn(&[Vec<u8>], u64) -> Vec<u8>,
    check: impl Fn(&[u8]) -> Result<(), String> + Send + 'static,
) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let start = first_case();
    let (tx, rx) = mpsc::channel::<(u64, Outcome)>();
    let worker = std::thread::spawn(move || {
        for case in start..start + count {
            let input = mutator(&seeds, case);
            super::alloc::reset_peak();
            let r = catch_unwind(AssertUnwindSafe(|| check(&input)));
            let peak = super::alloc::peak();
            let outcome = match r {
                Err(p) => Outcome::Panic(panic_text(p)),
                Ok(_) if peak > allocation_budget(input.len()) => Outcome::TooLarge(peak),
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(e)) => Outcome::Err(e),
            };
            if tx.send((case, outcome)).is_err() {
                return;
            }
        }
    });
    let (mut ok, mut err) = (0u64, 0u64);
    let mut failures = Vec::new();
    // Error kinds seen (the last part of their text, digits left out).
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    for done in 0..count {
        let (case, outcome) = match rx.recv_timeout(HANG) {
            Ok(v) => v,
            Err(_) => panic!(
                "{name}: case {} hangs (or killed its thread); replay with \
                 LAYERFS_MUTATION_START={} LAYERFS_MUTATIONS=1",
                start + done,
                start + done
            ),
        };
        match outcome {
            Outcome::Ok => ok += 1,
            Outcome::Err(e) if e.contains('\n') => {
                failures.push(format!("case {case}: error of several lines: {e:?}"))
            }
            Outcome::Err(e) => {
                err += 1;
                let last = e.rsplit(": ").next().unwrap_or("");
                let kind: String = last
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(70)
                    .collect();
                *kinds.entry(kind).or_default() += 1;
            }
            Outcome::Panic(p) => failures.push(format!("case {case}: panic: {p}")),
            Outcome::TooLarge(n) => {
                failures.push(format!("case {case}: one allocation of {n} bytes"))
            }
        }
    }
    let _ = worker.join();
    eprintln!(
        "mutations {name}: {} cases, {ok} ok, {err} errors, {} failures",
        count,
        failures.len()
    );
    if std::env::var_os("LAYERFS_MUTATION_ERRORS").is_some() {
        for (kind, n) in &kinds {
            eprintln!("  {n:6} {kind}");
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {count} cases failed (replay: LAYERFS_MUTATION_START=CASE \
         LAYERFS_MUTATIONS=1):\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

/// Runs `f` on a thread of its own and fails the test if it takes longer
/// than a hang would (a quadratic parser on a crafted input).
pub fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => panic!("{what}: panic: {}", panic_text(p)),
        Err(_) => panic!("{what}: still running after {HANG:?}, a hang"),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_reproducible_and_varied() {
        let seeds = vec![b"size=12345\nname=x\n".to_vec(), vec![0u8; 64]];
        assert_eq!(mutate(&seeds, 7), mutate(&seeds, 7));
        let distinct: std::collections::HashSet<Vec<u8>> =
            (0..200).map(|i| mutate(&seeds, i)).collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
    }
}
