//! What cold reads cost, as `layerfs mounts` shows it: bytes of layer files
//! served and bytes inflated for them.

use crate::support::{Env, Tar, can_mount, gzip, wait_until};
use std::io::Read;

/// The ReadStats of the one live mount, once the daemon has published them.
fn read_stats(env: &Env) -> Option<(u64, u64)> {
    let out = env.ok(&["mounts", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).ok()?;
    let s = &rows[0]["ReadStats"];
    Some((s["served"].as_u64()?, s["inflated"].as_u64()?))
}

#[test]
fn mounts_shows_bytes_served_and_inflated() {
    if !can_mount("mounts_shows_bytes_served_and_inflated") {
        return;
    }
    let env = Env::new();
    env.image(
        "cold:1",
        &[gzip(&Tar::new().big("big.bin", 24 << 20, 7).finish())],
    );
    let m = env.mount("cold:1", &[]);
    let mut head = vec![0u8; 1 << 20];
    std::fs::File::open(m.join("big.bin"))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let mut stats = None;
    wait_until(
        || {
            stats = read_stats(&env).filter(|s| s.0 >= 1 << 20);
            stats.is_some()
        },
        "ReadStats counting the 1 MiB read",
    );
    let (served, inflated) = stats.unwrap();
    // The kernel reads ahead of 1 MiB, but a cold read of the file's head
    // inflates about what it serves (and as much again decoded ahead), not
    // the layer.
    assert!(served <= 24 << 20, "served {served}");
    assert!(
        inflated >= served && inflated <= 2 * served + (4 << 20),
        "inflated {inflated} to serve {served}"
    );
}
