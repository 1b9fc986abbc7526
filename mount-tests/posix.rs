//! POSIX conformance of a writable mount: the pjdfstest suite (the Rust
//! rewrite, `cargo install pjdfstest`) run in a container's mount and, in
//! the same test, in a writable kernel overlayfs over the same layer
//! extracted. layerfs may fail no case that overlayfs passes, except those
//! in `ALLOWED`, each with its reason. The side-by-side table goes to stderr.

use crate::support::{Env, Overlay, Tar, can_mount, have_tool};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Cases layerfs may fail where kernel overlayfs passes: (name, why).
/// Empty: every such failure found so far was fixed.
const ALLOWED: &[(&str, &str)] = &[];

/// Users the privileged cases switch to: they exist on every Debian host,
/// so the test creates none.
pub(crate) const CONFIG: &str = r#"
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
# Longer than any timestamp granularity of the host filesystems.
naptime = 0.05
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Failed,
    Skipped,
}

impl Outcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Case name → outcome, from pjdfstest's `name ... ok|FAILED|skipped` lines.
pub(crate) fn parse(output: &str) -> BTreeMap<String, Outcome> {
    output
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let outcome = match words.next_back()? {
                "ok" => Outcome::Ok,
                "FAILED" => Outcome::Failed,
                "skipped" => Outcome::Skipped,
                _ => return None,
            };
            name.contains("::").then(|| (name.to_string(), outcome))
        })
        .collect()
}

/// Runs the suite in `dir`; returns the outcomes and the full output.
fn pjdfstest(env: &Env, dir: &Path, what: &str) -> (BTreeMap<String, Outcome>, String) {
    let config = env.dir.path().join("pjdfstest.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let secondary = env.mkdir(&format!("secondary-{what}"));
    let out = Command::new("timeout")
        .arg("900")
        .arg("pjdfstest")
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(&secondary)
        .current_dir(dir)
        .output()
        .expect("run pjdfstest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Summary:"),
        "pjdfstest in {what} did not finish ({}):\n{text}",
        out.status
    );
    let outcomes = parse(&text);
    assert!(
        outcomes.len() > 300,
        "pjdfstest in {what} ran only {} cases:\n{text}",
        outcomes.len()
    );
    (outcomes, text)
}

/// The two runs side by side: a table of every case not ok on either side,
/// and the cases `want` passes that `got` does not (less those `allowed`).
pub(crate) fn side_by_side(
    (want_name, want): (&str, &BTreeMap<String, Outcome>),
    (got_name, got): (&str, &BTreeMap<String, Outcome>),
    allowed: &[(&str, &str)],
) -> (String, Vec<String>) {
    let count = |o: &BTreeMap<String, Outcome>, x: Outcome| o.values().filter(|&&v| v == x).count();
    let sum = |o: &BTreeMap<String, Outcome>| {
        format!(
            "{} ok / {} failed / {} skipped",
            count(o, Outcome::Ok),
            count(o, Outcome::Failed),
            count(o, Outcome::Skipped)
        )
    };
    let mut table = format!(
        "pjdfstest {} cases: {want_name} {}; {got_name} {}\n{:<60} {:>16} {:>10}\n",
        want.len(),
        sum(want),
        sum(got),
        "case (every one not ok on either side)",
        want_name,
        got_name
    );
    let names: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let mut regressions = Vec::new();
    for name in names {
        let w = want.get(name).copied();
        let g = got.get(name).copied();
        if w == Some(Outcome::Ok) && g == Some(Outcome::Ok) {
            continue;
        }
        let word = |o: Option<Outcome>| o.map_or("-", Outcome::word);
        table.push_str(&format!("{name:<60} {:>16} {:>10}\n", word(w), word(g)));
        if w == Some(Outcome::Ok)
            && g != Some(Outcome::Ok)
            && !allowed.iter().any(|(a, _)| a == name)
        {
            regressions.push(name.clone());
        }
    }
    (table, regressions)
}

/// The lines pjdfstest printed about `case` (its assertion message).
pub(crate) fn detail(output: &str, case: &str) -> String {
    let mut lines = output.lines().skip_while(|l| !l.starts_with(case));
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    out.extend(
        lines
            .take_while(|l| l.starts_with('\t') || l.starts_with(' '))
            .filter(|l| !l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .take(4),
    );
    out.join("\n")
}

#[test]
fn a_writable_mount_passes_what_kernel_overlayfs_passes_in_pjdfstest() {
    const T: &str = "a_writable_mount_passes_what_kernel_overlayfs_passes_in_pjdfstest";
    if !can_mount(T) || !have_tool("pjdfstest", T) {
        return;
    }
    let env = Env::new();
    let layer = Tar::new()
        .dir("work", 0o755)
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"posix\n")
        .file("work/lower-file", 0o644, b"from the layer\n")
        .finish();
    env.image("posix:1", std::slice::from_ref(&layer));
    let lower = env.mkdir("lower");
    let mut archive = tar::Archive::new(&layer[..]);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(&lower).unwrap();

    let kovl = Overlay::mount(
        &[lower],
        &env.mkdir("kovl/merged"),
        Some(&env.mkdir("kovl")),
    );
    let (want, kovl_out) = pjdfstest(&env, &kovl.path.join("work"), "kernel overlayfs");
    drop(kovl);
    let m = env.mount_writable("posix:1", "posix");
    let (got, lfs_out) = pjdfstest(&env, &m.join("work"), "layerfs");
    assert_eq!(
        std::fs::read(m.join("work/lower-file")).unwrap(),
        b"from the layer\n",
        "the suite ran somewhere else than the mount"
    );

    let (table, regressions) =
        side_by_side(("kernel overlayfs", &want), ("layerfs", &got), ALLOWED);
    eprintln!("{table}");
    let why: Vec<String> = regressions.iter().map(|r| detail(&lfs_out, r)).collect();
    assert!(
        regressions.is_empty(),
        "layerfs fails {} cases that kernel overlayfs passes:\n{}\n(overlayfs output for reference: {} lines)",
        regressions.len(),
        why.join("\n"),
        kovl_out.lines().count()
    );
}
