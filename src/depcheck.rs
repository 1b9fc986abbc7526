//! Keeps the dependency arrows pointing one way, as the architecture says
//! (go-containerregistry's depcheck, in spirit): each module may use only
//! modules below it, and the files of one module use each other without a
//! cycle (its root, `mod.rs`, is the module's face and stays out of that).
//!
//! Every path a file names is checked: each leaf of its `use` trees
//! (`use crate::{a::x, b::{c, d}}`) and every `crate::`, `super::` and
//! `self::` path in its code, with comments and literals left out. Test
//! code may reach up: the item after a `#[cfg(test)]` (a `mod tests {..}`
//! block, a `mod tests;` file and all under it) is skipped; code after it is
//! checked again. A name a module root re-exports (`pub use tree::UnionFs`)
//! leads to the file that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module's level; a module may use only modules of a lower level.
const LEVELS: &[(&str, u32)] = &[
    ("oci", 0),
    // user namespaces use nothing of ours; run, build and the CLI enter them
    ("userns", 0),
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
    // fuzzing glue drives every parser, so it sits above all of them
    ("fuzzing", 8),
];

fn level(m: &str) -> Option<u32> {
    LEVELS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l)
}

/// `src` with comments, string and char literals blanked (newlines kept).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { '\n' } else { ' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(n) = (!ident_before).then(|| raw_string(rest)).flatten() {
            n
        } else if rest[0] == b'"' || (!ident_before && rest.starts_with(b"b\"")) {
            let start = if rest[0] == b'"' { 1 } else { 2 };
            let mut j = start;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == b'\'' && rest.get(1) == Some(&b'\\') {
            rest[2..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(rest.len(), |p| p + 3)
        } else if rest[0] == b'\'' && rest.get(2) == Some(&b'\'') {
            3
        } else {
            let ch = src[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&src[i..i + ch]);
            i += ch;
            continue;
        };
        blank(&mut out, &rest[..end]);
        i += end;
    }
    out
}

/// The length of a raw string literal (`r"..."`, `br#"..."#`) at the start
/// of `s`, if one is there.
fn raw_string(s: &[u8]) -> Option<usize> {
    let mut j = usize::from(s.first() == Some(&b'b'));
    if s.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = s[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if s.get(j) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = &s[j + 1..];
    let end = body
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map_or(s.len(), |p| j + 1 + p + close.len());
    Some(end)
}

fn tokens(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let n = b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            out.push(&code[i..i + n]);
            i += n;
        } else if b[i..].starts_with(b"::") {
            out.push("::");
            i += 2;
        } else {
            let n = code[i..].chars().next().map_or(1, char::len_utf8);
            out.push(&code[i..i + n]);
            i += n;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
}

/// The code of a file without its test-only items, and the names of the
/// test-only file modules it declares (`#[cfg(test)] mod NAME;`).
fn non_test(code: &str) -> (Vec<&str>, Vec<String>) {
    let t = tokens(code);
    let (mut out, mut test_mods) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < t.len() {
        if t[i..].starts_with(&["#", "[", "cfg", "(", "test", ")", "]"]) {
            i += 7;
            // Its other attributes, then the item up to `;` or its `{...}`.
            while t.get(i) == Some(&"#") {
                let mut depth = 0;
                while let Some(&x) = t.get(i) {
                    i += 1;
                    match x {
                        "[" => depth += 1,
                        "]" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            let start = i;
            let mut depth = 0;
            while let Some(&x) = t.get(i) {
                i += 1;
                match x {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ";" if depth == 0 => break,
                    _ => {}
                }
            }
            let item = &t[start..i];
            if let Some(m) = item.iter().position(|&x| x == "mod")
                && item.last() == Some(&";")
                && let Some(name) = item.get(m + 1)
            {
                test_mods.push(name.to_string());
            }
            continue;
        }
        out.push(t[i]);
        i += 1;
    }
    (out, test_mods)
}

/// Expands the use tree at `t[*i]` under `prefix` into the paths it names.
fn use_tree(t: &[&str], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(&x) = t.get(*i) {
        *i += 1;
        match x {
            "{" => {
                while let Some(&y) = t.get(*i) {
                    if y == "}" {
                        *i += 1;
                        break;
                    }
                    let before = *i;
                    use_tree(t, i, &path, out);
                    // Past the comma (or a token no tree starts with).
                    if t.get(*i) == Some(&",") || *i == before {
                        *i += 1;
                    }
                }
                return;
            }
            "*" => break,
            "::" if path.is_empty() => {}
            id if is_ident(id) => {
                if id != "self" || path.is_empty() {
                    path.push(id.to_string());
                }
                if t.get(*i) == Some(&"::") {
                    *i += 1;
                    continue;
                }
                if t.get(*i) == Some(&"as") {
                    *i += 2;
                }
                break;
            }
            _ => {
                *i -= 1;
                return;
            }
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Every path `code` names: the leaves of its `use` trees, and the
/// `crate::`/`super::`/`self::` paths elsewhere.
fn paths(code: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let t = code[i];
        let after_path = i > 0 && code[i - 1] == "::";
        if t == "use" && !after_path {
            i += 1;
            use_tree(code, &mut i, &[], &mut out);
            continue;
        }
        if matches!(t, "crate" | "super" | "self") && !after_path && code.get(i + 1) == Some(&"::")
        {
            let mut path = vec![t.to_string()];
            i += 2;
            while let Some(&x) = code.get(i) {
                if !is_ident(x) {
                    break;
                }
                path.push(x.to_string());
                if code.get(i + 1) != Some(&"::") {
                    break;
                }
                i += 2;
            }
            out.push(path);
        }
        i += 1;
    }
    out
}

/// A source file: its path under src/ (`archive/save.rs`), module path
/// (`["archive", "save"]`) and whether it is a module root (mod.rs, lib.rs).
struct File {
    module: Vec<String>,
    root: bool,
    code: Vec<String>,
    test_mods: Vec<String>,
}

fn module_of(rel: &str) -> (Vec<String>, bool) {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    let root = matches!(parts.last().map(String::as_str), Some("mod" | "lib"));
    if root {
        parts.pop();
    }
    (parts, root)
}

/// What is wrong in the crate whose files (path under src/ → text) are
/// given: uses of modules at or above one's level, and cycles between the
/// files of one module.
fn problems(sources: &BTreeMap<String, String>) -> Vec<String> {
    let mut files: BTreeMap<String, File> = BTreeMap::new();
    for (rel, text) in sources {
        let (module, root) = module_of(rel);
        let stripped = strip(text);
        let (code, test_mods) = non_test(&stripped);
        let code = code.into_iter().map(String::from).collect();
        files.insert(
            rel.clone(),
            File {
                module,
                root,
                code,
                test_mods,
            },
        );
    }
    let by_module: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(rel, f)| (f.module.clone(), rel.clone()))
        .collect();
    let tests = test_files(&files, &by_module);

    let absolute = |f: &File, p: &[String]| -> Option<Vec<String>> {
        // In a file module, `self` is the file and `super` its parent.
        let mut base = f.module.clone();
        let mut rest = p;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A child module named without `self::` (uniform paths).
                let mut child = base.clone();
                child.push(first.to_string());
                by_module.get(&child)?;
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    };
    // The file that defines what `abs` names: its longest module prefix,
    // then through the re-exports of a module root.
    let file_of = |abs: &[String], reexports: &BTreeMap<(String, String), String>| {
        let n = (0..=abs.len())
            .rev()
            .find(|&n| by_module.contains_key(&abs[..n]))?;
        let rel = by_module.get(&abs[..n])?.clone();
        match abs.get(n) {
            Some(item) if files[&rel].root => Some(
                reexports
                    .get(&(rel.clone(), item.clone()))
                    .cloned()
                    .unwrap_or(rel),
            ),
            _ => Some(rel),
        }
    };
    // (module root, name) → the child file a root's `use` brings it from.
    let mut reexports = BTreeMap::new();
    for (rel, f) in files.iter().filter(|(_, f)| f.root) {
        let code: Vec<&str> = f.code.iter().map(String::as_str).collect();
        for p in paths(&code) {
            let Some(abs) = absolute(f, &p) else { continue };
            if abs.len() <= f.module.len() + 1 || !abs.starts_with(&f.module) {
                continue;
            }
            if let Some(def) = file_of(&abs, &BTreeMap::new())
                && def != *rel
                && let Some(name) = abs.last()
            {
                reexports.insert((rel.clone(), name.clone()), def);
            }
        }
    }

    let mut wrong = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, f) in files.iter().filter(|(rel, _)| !tests.contains(*rel)) {
        let Some(top) = f.module.first() else {
            continue;
        };
        let Some(own) = level(top) else { continue };
        let code: Vec<&str> = f.code.iter().map(String::as_str).collect();
        for p in paths(&code) {
            let Some(abs) = absolute(f, &p) else { continue };
            let Some(used) = abs.first() else { continue };
            if used != top {
                if level(used).is_some_and(|l| l >= own) {
                    wrong.push(format!("{rel} uses {}", abs.join("::")));
                }
                continue;
            }
            if let Some(def) = file_of(&abs, &reexports)
                && def != *rel
                && !f.root
                && !files[&def].root
                && !tests.contains(&def)
            {
                edges.entry(rel.clone()).or_default().insert(def);
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    wrong.extend(cycles(&edges));
    wrong
}

/// Files only tests compile: declared under `#[cfg(test)]`, and all below.
fn test_files(
    files: &BTreeMap<String, File>,
    by_module: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<String> {
    let mut test_modules: Vec<Vec<String>> = Vec::new();
    for f in files.values() {
        for name in &f.test_mods {
            let mut m = f.module.clone();
            m.push(name.clone());
            test_modules.push(m);
        }
    }
    by_module
        .iter()
        .filter(|(m, _)| test_modules.iter().any(|t| m.starts_with(t)))
        .map(|(_, rel)| rel.clone())
        .collect()
}

/// One line per cycle found (a strongly connected set of files, shown by a
/// path around it).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for start in edges.keys() {
        if done.contains(start) {
            continue;
        }
        if let Some(path) = path_back(edges, start) {
            done.extend(path.iter().cloned());
            let mut shown = path.clone();
            shown.push(start.clone());
            out.push(format!("cycle: {}", shown.join(" -> ")));
        }
    }
    out
}

/// A path from `start` back to itself, if there is one (breadth first, so
/// the shortest).
fn path_back(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for next in edges.get(n).into_iter().flatten() {
            if next == start {
                let mut path = vec![n.to_string()];
                let mut at = n;
                while at != start {
                    at = from[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return Some(path);
            }
            if !from.contains_key(next.as_str()) {
                from.insert(next, n);
                queue.push_back(next);
            }
        }
    }
    None
}

fn rust_files(src: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        let rel = p.strip_prefix(src).expect("under src").to_string_lossy();
        // The binary's files: its CLI may use anything.
        if rel == "main.rs" || rel == "cli" {
            continue;
        }
        if p.is_dir() {
            rust_files(src, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            out.insert(rel.into_owned(), text);
        }
    }
}

#[test]
fn modules_use_only_modules_below_them_and_no_file_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    rust_files(&src, &src, &mut sources);
    let wrong = problems(&sources);
    assert!(
        wrong.is_empty(),
        "dependency problems:\n{}",
        wrong.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[(&str, &str)]) -> Vec<String> {
        let sources = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        problems(&sources)
    }

    const BASE: &[(&str, &str)] = &[
        ("lib.rs", "pub mod store;\npub mod image;\npub mod layer;\n"),
        ("store/mod.rs", "pub struct Store;\n"),
        ("layer/mod.rs", "mod a;\nmod b;\npub use a::A;\n"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn a_grouped_import_pointing_up_is_caught() {
        let files = with(&[
            ("layer/a.rs", "pub struct A;\n"),
            ("layer/b.rs", ""),
            (
                "store/x.rs",
                "use crate::{oci::Digest, layer::{A, b::{self, B}}};\n",
            ),
        ]);
        let wrong = check(&files);
        assert_eq!(
            wrong,
            [
                "store/x.rs uses layer::A",
                "store/x.rs uses layer::b",
                "store/x.rs uses layer::b::B"
            ],
            "{wrong:?}"
        );
    }

    #[test]
    fn code_after_a_test_block_is_checked_and_the_block_is_not() {
        let files = with(&[
            ("layer/a.rs", ""),
            ("layer/b.rs", ""),
            (
                "store/mod.rs",
                "#[cfg(test)]\nmod tests {\n    use crate::layer::A;\n    fn f() { let s = \"}\"; }\n}\n\
                 #[cfg(test)]\nmod more_tests;\n\
                 // crate::image in a comment\n\
                 fn g() -> crate::image::Image { todo!() }\n",
            ),
            ("store/more_tests.rs", "use crate::image::Up;\n"),
        ]);
        assert_eq!(check(&files), ["store/mod.rs uses image::Image"]);
    }

    #[test]
    fn a_cycle_between_files_of_one_module_is_caught() {
        // b reaches a through the root's re-export; a names b in code.
        let files = with(&[
            ("layer/a.rs", "pub struct A;\nfn f() { super::b::g(); }\n"),
            ("layer/b.rs", "use super::A;\npub fn g() {}\n"),
        ]);
        assert_eq!(
            check(&files),
            ["cycle: layer/a.rs -> layer/b.rs -> layer/a.rs"]
        );
        let one_way = with(&[
            ("layer/a.rs", "pub struct A;\n"),
            ("layer/b.rs", "use super::{A, a};\n"),
        ]);
        assert_eq!(check(&one_way), Vec::<String>::new());
    }

    #[test]
    fn literals_and_comments_hide_nothing_else() {
        let s = strip("let a = r#\"crate::x\"#; /* crate::y /* nested */ */ 'c'; '\\''; x<'a>");
        assert!(!s.contains("crate::"), "{s}");
        assert!(s.contains("x<'a>"), "{s}");
    }
}
