//! `layerfs images [REPOSITORY[:TAG]] [-a] [-q] [--filter K=V]... [--format
//! table|json|TEMPLATE] [--no-trunc] [--digests]`, newest first, as Docker's.
//! SIZE is the layers' uncompressed bytes, so it is the same in every store
//! and however the layers are compressed.

use super::format::{OutputFormat, go_time, header_for, human_size, print_table, short_id};
use super::{Ctx, UsageError};
use anyhow::Result;
use layerfs::layer::LayerIndex;
use layerfs::oci::time::{human_age, parse_rfc3339};
use layerfs::oci::{Digest, Platform, Reference};
use layerfs::store::Store;
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct Args {
    /// Show only images whose repository (or repository:tag) matches this pattern
    reference: Option<String>,
    /// Show all images, build steps' intermediate images too
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// table, json, or a Go template ({{.Repository}}:{{.Tag}}, {{json .}}, table {{.ID}}\t{{.Size}})
    #[arg(long)]
    format: Option<String>,
    /// Show full image IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show manifest digests
    #[arg(long)]
    digests: bool,
}

/// One line of the listing: one name of an image (or an unnamed image).
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub name: Option<String>,
    pub id: Digest,
    pub digest: Digest,
    pub created: Option<String>,
    pub size: u64,
    /// The layers' compressed bytes, and how many of them are in the store:
    /// fewer for a lazy image not yet whole.
    pub blob_size: u64,
    pub local: u64,
    pub layers: usize,
    pub arch: String,
    pub os: String,
    pub labels: BTreeMap<String, String>,
}

impl Row {
    fn created_secs(&self) -> i64 {
        self.created
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(i64::MIN)
    }
}

/// The layers' uncompressed bytes (a layer whose index is missing counts
/// its compressed bytes).
pub(crate) fn image_size(store: &Store, m: &layerfs::oci::Manifest) -> u64 {
    m.layers
        .iter()
        .map(|l| {
            LayerIndex::open(&store.layer_index_path(&l.digest), &l.digest)
                .map_or(l.size, |x| x.meta().uncompressed_size)
        })
        .sum()
}

fn row(store: &Store, name: Option<String>, top: &Digest) -> Result<Row> {
    let (_, m) = store.manifest_for_platform(top, &Platform::host())?;
    let config = store.read_config(&m.config.digest)?;
    Ok(Row {
        name,
        id: m.config.digest,
        digest: *top,
        created: config.created,
        size: image_size(store, &m),
        blob_size: m.layers.iter().map(|l| l.size).sum(),
        local: m.layers.iter().map(|l| store.local_bytes(&l.digest)).sum(),
        layers: m.layers.len(),
        arch: config.architecture,
        os: config.os,
        labels: config.config.and_then(|c| c.labels).unwrap_or_default(),
    })
}

/// Every image listed in the store, newest first; with `all`, the build
/// cache's intermediate images too.
pub(crate) fn rows(store: &Store, all: bool) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    let entries = store.image_entries()?;
    for e in &entries {
        out.push(row(
            store,
            e.name().map(str::to_string),
            &e.descriptor.digest,
        )?);
    }
    if all {
        for h in store.holds()? {
            if h.id != layerfs::image::BUILD_CACHE_HOLD {
                continue;
            }
            for d in h.manifests {
                if out.iter().any(|r| r.digest == d) {
                    continue;
                }
                // A cache entry whose image gc already removed is no image.
                if let Ok(r) = row(store, None, &d) {
                    out.push(r);
                }
            }
        }
    }
    out.sort_by(|a, b| {
        b.created_secs()
            .cmp(&a.created_secs())
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// `path.Match` of Go as Docker's reference filter uses it: `*` and `?`
/// never match `/`, `[...]` classes (with `^`/`!` negation and ranges), `\`
/// escapes.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => {
                let mut i = 0;
                loop {
                    if m(rest, &n[i..]) {
                        return true;
                    }
                    if i == n.len() || n[i] == '/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && m(rest, &n[1..]),
            Some(('[', rest)) => {
                let Some((&c, n_rest)) = n.split_first() else {
                    return false;
                };
                let (negate, mut rest) = match rest.first() {
                    Some('^' | '!') => (true, &rest[1..]),
                    _ => (false, rest),
                };
                let mut hit = false;
                let mut first = true;
                loop {
                    match rest.first() {
                        None => return false,
                        Some(']') if !first => {
                            rest = &rest[1..];
                            break;
                        }
                        _ => {}
                    }
                    first = false;
                    let lo = if rest[0] == '\\' && rest.len() > 1 {
                        rest = &rest[1..];
                        rest[0]
                    } else {
                        rest[0]
                    };
                    rest = &rest[1..];
                    let hi = if rest.len() > 1 && rest[0] == '-' && rest[1] != ']' {
                        let h = rest[1];
                        rest = &rest[2..];
                        h
                    } else {
                        lo
                    };
                    hit |= lo <= c && c <= hi;
                }
                hit != negate && c != '/' && m(rest, n_rest)
            }
            Some(('\\', rest)) if !rest.is_empty() => {
                n.first() == Some(&rest[0]) && m(&rest[1..], &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && m(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// Whether an image named `name` matches a reference pattern as Docker
/// matches one: the whole `repository:tag`, or the repository alone.
pub(crate) fn reference_matches(pattern: &str, name: Option<&str>) -> bool {
    let Some(r) = name.and_then(|n| Reference::parse(n).ok()) else {
        return false;
    };
    let full = match r.tag() {
        Some(t) => format!("{}:{t}", r.name()),
        None => r.name().to_string(),
    };
    glob(pattern, &full) || glob(pattern, r.name())
}

/// The `--filter`s, each KEY=VALUE; filters of one key are alternatives,
/// filters of different keys must all hold.
pub(crate) struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

impl Filters {
    pub fn parse(filters: &[String], keys: &[&str]) -> Result<Filters> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let Some((k, v)) = f.split_once('=') else {
                return Err(UsageError(format!("bad filter {f:?}: use KEY=VALUE")).into());
            };
            if !keys.contains(&k) {
                return Err(UsageError(format!(
                    "invalid filter {k:?}: use one of {}",
                    keys.join(", ")
                ))
                .into());
            }
            by_key.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(Filters { by_key })
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }
}

/// Keeps the rows `filters` (and the positional pattern) select.
fn apply(store: &Store, rows: &mut Vec<Row>, reference: Option<&str>, f: &Filters) -> Result<()> {
    let mut dangling = None;
    for v in f.get("dangling") {
        dangling = Some(match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(
                    UsageError(format!("invalid filter dangling={v}: use true or false")).into(),
                );
            }
        });
    }
    let created_of = |what: &str| -> Result<i64> {
        let r = store.resolve(what)?;
        Ok(r.config
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(i64::MIN))
    };
    let before: Vec<i64> = f
        .get("before")
        .iter()
        .map(|w| created_of(w))
        .collect::<Result<_>>()?;
    let since: Vec<i64> = f
        .get("since")
        .iter()
        .map(|w| created_of(w))
        .collect::<Result<_>>()?;
    let mut patterns: Vec<&str> = f.get("reference").iter().map(String::as_str).collect();
    patterns.extend(reference);
    let labels = f.get("label");
    rows.retain(|r| {
        let t = r.created_secs();
        dangling.is_none_or(|d| d == r.name.is_none())
            && (patterns.is_empty()
                || patterns
                    .iter()
                    .any(|p| reference_matches(p, r.name.as_deref())))
            && labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => r.labels.get(k).is_some_and(|x| x == v),
                None => r.labels.contains_key(l),
            })
            && before.iter().all(|b| t < *b)
            && since.iter().all(|s| t > *s)
    });
    Ok(())
}

const HEADERS: &[(&str, &str)] = &[("ID", "IMAGE ID"), ("CreatedSince", "CREATED")];

/// A row with Docker's template fields.
fn template_row(r: &Row, no_trunc: bool, containers: usize) -> serde_json::Value {
    let (repo, tag) = super::format::repo_and_tag(r.name.as_deref());
    serde_json::json!({
        "Containers": containers.to_string(),
        "CreatedAt": go_time(r.created.as_deref()),
        "CreatedSince": human_age(r.created.as_deref()),
        "Digest": r.digest.to_string(),
        "ID": short_id(&r.id.to_string(), no_trunc),
        "Repository": repo,
        "Tag": tag,
        "Size": human_size(r.size),
        "VirtualSize": human_size(r.size),
        "SharedSize": "N/A",
        "UniqueSize": "N/A",
        "Labels": r.labels,
    })
}

/// The size, and for a lazy image not yet whole how much of it is local.
fn lazy_size(r: &Row) -> String {
    if r.local >= r.blob_size {
        return human_size(r.size);
    }
    let percent = r.local.saturating_mul(100) / r.blob_size.max(1);
    format!("{} ({percent}% local)", human_size(r.size))
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let filters = Filters::parse(
        &a.filter,
        &["dangling", "reference", "label", "before", "since"],
    )?;
    let store = ctx.store()?;
    let mut rows = rows(&store, a.all)?;
    apply(&store, &mut rows, a.reference.as_deref(), &filters)?;
    if a.quiet {
        let mut seen = Vec::new();
        for r in rows {
            let id = short_id(&r.id.to_string(), a.no_trunc);
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(());
    }
    match format {
        OutputFormat::Json => {
            let mut images: Vec<serde_json::Value> = Vec::new();
            for r in rows {
                let same = images
                    .iter_mut()
                    .find(|i| i["Digest"] == serde_json::json!(r.digest.to_string()));
                match same {
                    Some(i) => {
                        if let (Some(names), Some(n)) = (i["Names"].as_array_mut(), r.name) {
                            names.push(n.into());
                        }
                    }
                    None => images.push(serde_json::json!({
                        "Id": r.id.to_string(),
                        "Names": r.name.into_iter().collect::<Vec<_>>(),
                        "Digest": r.digest.to_string(),
                        "Created": r.created,
                        "Size": r.size,
                        "BlobSize": r.blob_size,
                        "LocalSize": r.local,
                        "Layers": r.layers,
                        "Labels": r.labels,
                        "Architecture": r.arch,
                        "Os": r.os,
                    })),
                }
            }
            println!("{}", serde_json::to_string_pretty(&images)?);
        }
        OutputFormat::Template(t) => {
            let containers = layerfs::container::list(&store)?;
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let n = containers.iter().filter(|c| c.manifest == r.digest).count();
                    template_row(r, a.no_trunc, n)
                })
                .collect();
            super::format::print_template(&t, &v, header_for(HEADERS))?;
        }
        OutputFormat::Table => {
            let mut headers = vec!["REPOSITORY", "TAG"];
            if a.digests {
                headers.push("DIGEST");
            }
            headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let (repo, tag) = super::format::repo_and_tag(r.name.as_deref());
                    let mut row = vec![repo, tag];
                    if a.digests {
                        row.push(r.digest.to_string());
                    }
                    row.extend([
                        short_id(&r.id.to_string(), a.no_trunc),
                        human_age(r.created.as_deref()),
                        lazy_size(r),
                    ]);
                    row
                })
                .collect();
            print_table(&headers, &table);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_go_path_match() {
        let cases = [
            ("ap*", "alpine", false),
            ("al*", "alpine", true),
            ("al*", "alpine:3.20", true),
            ("*", "me/app", false),
            ("*/*", "me/app", true),
            ("a?p", "app", true),
            ("a?p", "a/p", false),
            ("[a-c]pp", "bpp", true),
            ("[^a-c]pp", "bpp", false),
            ("[!a-c]pp", "dpp", true),
            ("x\\*", "x*", true),
            ("x\\*", "xy", false),
            ("debian:1*", "debian:12", true),
            ("[", "a", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn a_reference_pattern_matches_the_repository_or_repository_and_tag() {
        let cases = [
            ("alpine", Some("alpine:3.20"), true),
            ("alpine:3.20", Some("alpine:3.20"), true),
            ("alpine:3.19", Some("alpine:3.20"), false),
            ("alp*", Some("alpine:3.20"), true),
            ("alpine:*", Some("alpine:3.20"), true),
            ("*:3.20", Some("alpine:3.20"), true),
            ("ap*", Some("alpine:3.20"), false),
            ("localhost:5000/*", Some("localhost:5000/me:1"), true),
            ("alpine", None, false),
        ];
        for (p, name, want) in cases {
            assert_eq!(reference_matches(p, name), want, "{p} vs {name:?}");
        }
    }

    #[test]
    fn filters_need_known_keys_and_a_value() {
        let keys = ["dangling", "label"];
        let f = Filters::parse(&["label=a=b".into(), "label=c".into()], &keys).unwrap();
        assert_eq!(f.get("label"), ["a=b", "c"]);
        assert!(f.get("dangling").is_empty());
        for bad in ["nokey", "color=red"] {
            let e = Filters::parse(&[bad.into()], &keys).err().unwrap();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad}: {e}");
        }
    }
}
