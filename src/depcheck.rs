//! Keeps the dependency arrows pointing one way, as the architecture says:
//! each module may use only modules below it (go-containerregistry's
//! depcheck, in spirit). A new `use crate::x` that points up fails here.

use std::collections::BTreeMap;
use std::path::Path;

/// Each module's level; a module may use only modules of a lower level.
const LEVELS: &[(&str, u32)] = &[
    ("oci", 0),
    ("store", 1),
    ("layer", 2),
    ("image", 3),
    ("union", 3),
    ("archive", 4),
    ("container", 4),
    ("flatten", 4),
    ("commit", 5),
    ("export", 5),
    ("mount", 5),
    ("registry", 5),
    ("run", 6),
    ("dockerfile", 7),
];

fn level(m: &str) -> Option<u32> {
    LEVELS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_use_only_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let module = module.strip_suffix(".rs").unwrap_or(module);
        let Some(own) = level(module) else { continue };
        let text = std::fs::read_to_string(&f).expect("read");
        // Tests may reach up (a registry test builds an image with `build`).
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        if rel.components().any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(|s| s == "tests" || s.ends_with("tests.rs"))
        }) {
            continue;
        }
        for (i, _) in text.match_indices("crate::") {
            let used: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if used != module && level(&used).is_some_and(|l| l >= own) {
                wrong
                    .entry(rel.display().to_string())
                    .or_default()
                    .push(used);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "modules that use modules at or above their level: {wrong:?}"
    );
}
