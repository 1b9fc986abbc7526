//! Builds without RUN (no mounts needed): COPY, ADD, WORKDIR and config
//! steps over images made in code, the cache, errors with line numbers,
//! and escape attempts through the context and the image's symlinks.

use super::*;
use crate::flatten::Flatten;
use crate::image::{ImportOptions, import};
use crate::layer::{SpanCache, TarWriter};
use crate::testutil::{TarBuilder, gzip, temp_store};
use crate::union::{ROOT_INO, Stack, UnionFs};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// (type, mode, uid:gid, content or link target) of every path of an image.
type Listing = BTreeMap<String, (char, u32, String, String)>;

pub(super) fn listing(store: &Store, manifest: &crate::oci::Digest) -> Listing {
    let m = store.read_manifest(manifest).unwrap();
    let layers: Vec<_> = m.layers.iter().map(|l| l.digest).collect();
    let view = UnionFs::new(
        Stack::open(store, &layers, SpanCache::new(1 << 20)).unwrap(),
        None,
    );
    let mut out = TarWriter::new(Vec::new());
    Flatten::new(&view).dir(&mut out, ROOT_INO, b"").unwrap();
    let bytes = out.finish().unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut map = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => 'f',
        };
        let mut content = String::new();
        if kind == 'l' || kind == 'h' {
            content = String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned();
        } else {
            e.read_to_string(&mut content).unwrap();
        }
        map.insert(
            path,
            (
                kind,
                h.mode().unwrap() & 0o7777,
                format!("{}:{}", h.uid().unwrap(), h.gid().unwrap()),
                content,
            ),
        );
    }
    map
}

pub(super) fn base_image(store: &Store) {
    let mut t = TarBuilder::new();
    t.dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\napp:x:1002:\n")
        .dir("tmp", 0o1777)
        .dir("opt", 0o755)
        .symlink("escape", "/")
        .symlink("etc/optlink", "../opt");
    import(
        store,
        &gzip(&t.finish())[..],
        Some(&Reference::parse("base:1").unwrap()),
        &ImportOptions::default(),
    )
    .unwrap();
}

pub(super) fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn build_in(store: &Store, ctx: &Path, dockerfile: &str) -> Result<Built, BuildError> {
    write(ctx, "Dockerfile", dockerfile.as_bytes());
    let opts = BuildOptions {
        context: ctx.to_path_buf(),
        tag: Some(Reference::parse("app:1").unwrap()),
        ..Default::default()
    };
    build(store, &opts, &mut std::io::sink())
}

const DOCKERFILE: &str = "\
FROM base:1
ARG GREETING=hello
COPY --chown=app:app app /opt/app
COPY o?e.txt app/*.txt /multi/
COPY one.txt /renamed.txt
COPY app/a.txt /escape/tmp/via-symlink
COPY app/a.txt /etc/optlink/through-link
WORKDIR /work/dir
COPY two.txt .
ENV A=1 B=\"two words\" G=$GREETING
LABEL version=\"1.0\"
EXPOSE 8080
USER app
CMD [\"run\", \"$A\"]
";

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(c, "app/a.txt", b"file a\n");
    write(c, "app/sub/b.txt", b"file b\n");
    write(c, "one.txt", b"1\n");
    write(c, "two.txt", b"2\n");
    write(c, "notes.md", b"not copied\n");
    write(c, "app/skip.md", b"not copied\n");
    write(c, ".dockerignore", b"**/*.md\n");
    std::fs::set_permissions(
        c.join("app/sub/b.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    ctx
}

#[test]
fn copies_with_dockers_rules_inside_the_image() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = context();
    let built = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    assert_eq!(
        built.new_layers, 7,
        "six COPYs and the WORKDIR that made its dir"
    );
    let img = store.resolve("app:1").unwrap();
    assert_eq!(img.id(), built.id);
    let l = listing(&store, &img.manifest_digest);
    let get = |p: &str| l.get(p).unwrap_or_else(|| panic!("{p} missing: {l:#?}"));
    // A directory's contents, owned as --chown says; created dirs 0755.
    assert_eq!(
        get("opt/app"),
        &('d', 0o755, "1001:1002".into(), String::new())
    );
    assert_eq!(
        get("opt/app/a.txt"),
        &('f', 0o644, "1001:1002".into(), "file a\n".into())
    );
    assert_eq!(
        get("opt/app/sub/b.txt"),
        &('f', 0o600, "1001:1002".into(), "file b\n".into())
    );
    assert_eq!(get("multi/one.txt").3, "1\n");
    assert_eq!(
        get("multi/a.txt"),
        &('f', 0o644, "0:0".into(), "file a\n".into())
    );
    assert!(!l.contains_key("multi/two.txt"));
    assert_eq!(get("renamed.txt").3, "1\n");
    // Through the image's symlinks, never out of it.
    assert_eq!(get("tmp/via-symlink").3, "file a\n");
    assert_eq!(get("opt/through-link").3, "file a\n");
    // (The tar crate writes a link to / as "//", the same path.)
    assert_eq!(get("escape").0, 'l');
    assert_eq!(get("escape").3.trim_matches('/'), "");
    assert_eq!(get("tmp").1, 0o1777, "an existing directory keeps its mode");
    assert_eq!(get("work/dir"), &('d', 0o755, "0:0".into(), String::new()));
    assert_eq!(get("work/dir/two.txt").3, "2\n");
    assert!(
        !l.keys().any(|k| k.ends_with(".md")),
        ".dockerignore: {l:#?}"
    );

    let cc = img.config.config.clone().unwrap();
    assert_eq!(
        cc.env.unwrap(),
        vec!["A=1", "B=two words", "G=hello"],
        "ENV expands ARGs"
    );
    assert_eq!(cc.cmd.unwrap(), vec!["run", "$A"], "CMD is not expanded");
    assert_eq!(cc.working_dir.as_deref(), Some("/work/dir"));
    assert_eq!(cc.user.as_deref(), Some("app"));
    assert_eq!(cc.labels.unwrap()["version"], "1.0");
    assert!(cc.exposed_ports.unwrap().contains_key("8080/tcp"));
    let steps: Vec<(String, bool)> = img
        .config
        .history
        .iter()
        .skip(1)
        .map(|h| (h.created_by.clone().unwrap(), h.empty_layer))
        .collect();
    assert_eq!(
        steps[0],
        ("COPY --chown=app:app app /opt/app".into(), false)
    );
    assert_eq!(steps[5], ("WORKDIR /work/dir".into(), false));
    assert_eq!(steps[7], ("ENV A=1 B=two words G=hello".into(), true));
    assert_eq!(
        steps.len(),
        12,
        "one entry per step but ARG and FROM: {steps:#?}"
    );
    assert_eq!(img.manifest.layers.len(), 8);
    assert_eq!(img.config.rootfs.diff_ids.len(), 8);
    // Step images are held by the cache, not listed.
    assert_eq!(store.image_entries().unwrap().len(), 2);
}

#[test]
fn a_rebuild_comes_from_the_cache_and_a_change_rebuilds_from_its_step() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = context();
    let first = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    let blobs = store.list_blobs().unwrap().len();
    let again = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!((again.new_layers, again.cached), (0, 12));
    assert_eq!(
        store.list_blobs().unwrap().len(),
        blobs,
        "nothing new stored"
    );
    // An ignored file changes nothing.
    write(ctx.path(), "app/skip.md", b"edited\n");
    assert_eq!(
        build_in(&store, ctx.path(), DOCKERFILE).unwrap().id,
        first.id
    );
    // A copied file: only the steps from the first COPY that reads it run again.
    write(ctx.path(), "one.txt", b"one, edited\n");
    let changed = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    assert_eq!((changed.cached, changed.new_layers), (1, 6));
    write(ctx.path(), "app/sub/b.txt", b"b, edited\n");
    let changed = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    assert_eq!(
        (changed.cached, changed.new_layers),
        (0, 7),
        "app/ is read by the first COPY"
    );
    write(ctx.path(), "two.txt", b"two, edited\n");
    let changed = build_in(&store, ctx.path(), DOCKERFILE).unwrap();
    assert_ne!(changed.id, first.id);
    assert_eq!((changed.cached, changed.new_layers), (6, 1));
    let l = listing(&store, &store.resolve("app:1").unwrap().manifest_digest);
    assert_eq!(l["work/dir/two.txt"].3, "two, edited\n");
    // --no-cache runs everything again.
    let opts = BuildOptions {
        context: ctx.path().to_path_buf(),
        no_cache: true,
        ..Default::default()
    };
    let fresh = build(&store, &opts, &mut std::io::sink()).unwrap();
    assert_eq!((fresh.cached, fresh.new_layers), (0, 7));
    // A different build arg changes the steps that use it.
    let opts = BuildOptions {
        context: ctx.path().to_path_buf(),
        build_args: vec![("GREETING".into(), "hi".into())],
        ..Default::default()
    };
    let arg = build(&store, &opts, &mut std::io::sink()).unwrap();
    assert_eq!(arg.cached, 7, "steps before ENV G=$GREETING");
    let cc = store.read_config(&arg.id).unwrap().config.unwrap();
    assert!(cc.env.unwrap().contains(&"G=hi".to_string()));
}

#[test]
fn add_unpacks_archives_and_refuses_members_that_climb_out() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let mut t = TarBuilder::new();
    t.dir("./pkg", 0o755)
        .file_owned("./pkg/tool", 0o755, 7, 8, b"#!/bin/sh\n")
        .hardlink("./pkg/tool-link", "./pkg/tool")
        .symlink("./pkg/abs", "/etc/passwd");
    write(ctx.path(), "pkg.tar.gz", &gzip(&t.finish()));
    write(ctx.path(), "plain.txt", b"not an archive\n");
    let built = build_in(
        &store,
        ctx.path(),
        "FROM base:1\nADD pkg.tar.gz /usr/local/\nADD plain.txt /docs/\n",
    )
    .unwrap();
    let l = listing(&store, &built.manifest.digest);
    assert_eq!(
        l["usr/local/pkg/tool"],
        ('f', 0o755, "7:8".into(), "#!/bin/sh\n".into())
    );
    assert_eq!(l["usr/local/pkg/tool-link"].0, 'h');
    assert_eq!(l["usr/local/pkg/abs"].3, "/etc/passwd");
    assert_eq!(l["docs/plain.txt"].3, "not an archive\n");

    let mut evil = TarBuilder::new();
    evil.file("ok", 0o644, b"fine").raw(
        b"../../../../../tmp/layerfs-escape",
        tar::EntryType::Regular,
        b"pwned",
    );
    write(ctx.path(), "evil.tar", &evil.finish());
    let e = build_in(&store, ctx.path(), "FROM base:1\n\nADD evil.tar /x/\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Dockerfile:3: ADD evil.tar /x/"), "{e}");
    assert!(e.contains("leaves the destination"), "{e}");
    assert!(!Path::new("/tmp/layerfs-escape").exists());

    // Refused, not copied as it is, whatever the destination.
    write(ctx.path(), "pkg.tar.xz", b"\xfd7zXZ\0rest of it");
    let e = build_in(&store, ctx.path(), "FROM base:1\nADD pkg.tar.xz /opt/pkg\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("xz and bzip2 archives are not supported"), "{e}");
}

#[test]
fn the_context_never_reaches_the_host() {
    let (_d, store) = temp_store();
    base_image(&store);
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"host secret\n");
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "ok.txt", b"ok\n");
    std::os::unix::fs::symlink(outside.path(), ctx.path().join("hostdir")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", ctx.path().join("up")).unwrap();
    for (src, line) in [("hostdir/secret", 2), ("hostdir", 2), ("up/etc/passwd", 2)] {
        let e = build_in(&store, ctx.path(), &format!("FROM base:1\nCOPY {src} /x\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!(":{line}: COPY {src} /x")), "{e}");
        assert!(e.contains("leaves the build context"), "{e}");
    }
    // Copying the whole context copies the symlinks as they are.
    let built = build_in(&store, ctx.path(), "FROM base:1\nCOPY . /ctx/\n").unwrap();
    let l = listing(&store, &built.manifest.digest);
    assert_eq!(l["ctx/hostdir"].0, 'l');
    assert!(!l.values().any(|v| v.3.contains("host secret")));
}

#[test]
fn errors_name_the_dockerfile_line() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "a", b"a");
    let table = [
        (
            "FROM base:1\nCOPY nope /x\n",
            "Dockerfile:2: COPY nope /x: nope: no such file",
        ),
        (
            "FROM missing:1\n",
            "Dockerfile:1: FROM missing:1: image missing:1 is not in the store",
        ),
        (
            "FROM base:1\nBOGUS x\n",
            "Dockerfile:2: unknown instruction: BOGUS",
        ),
        (
            "FROM base:1\nCOPY a b /x\n",
            "Dockerfile:2: COPY a b /x: with several sources",
        ),
        (
            "FROM base:1\nCOPY a /etc/passwd/x\n",
            "Dockerfile:2: COPY a /etc/passwd/x",
        ),
        (
            "FROM base:1 AS a\nFROM base:1 AS A\n",
            "Dockerfile:2: duplicate stage name \"a\"",
        ),
        (
            "FROM base:1\nCOPY --from=0 a /x\n",
            "Dockerfile:2: --from=0: a stage can only copy from an earlier stage",
        ),
        (
            "FROM base:1 AS b\nFROM b\nCOPY --from=b /nope /x\n",
            "Dockerfile:3: COPY --from=b /nope /x: /nope: no such file or directory",
        ),
        (
            "FROM base:1\nRUN <<EOF\ntrue\n",
            "Dockerfile:2: heredoc EOF: no line EOF ends it",
        ),
        ("FROM base:1\nCOPY --chown=nobody a /x\n", "no user nobody"),
        (
            "FROM base:1\nADD http://example.com/x /x\n",
            "URLs are not supported",
        ),
    ];
    for (df, want) in table {
        let e = build_in(&store, ctx.path(), df).unwrap_err().to_string();
        assert!(e.contains(want), "{df:?}: {e}");
    }
}

#[test]
fn from_scratch() {
    let (_d, store) = temp_store();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "bin/hello", b"#!hello\n");
    let built = build_in(
        &store,
        ctx.path(),
        "FROM scratch\nCOPY bin /bin\nENTRYPOINT [\"/bin/hello\"]\n",
    )
    .unwrap();
    let l = listing(&store, &built.manifest.digest);
    assert_eq!(l.keys().collect::<Vec<_>>(), ["bin", "bin/hello"]);
    let config = store.read_config(&built.id).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 1);
    assert_eq!(
        config.config.unwrap().entrypoint.unwrap(),
        vec!["/bin/hello"]
    );
}

#[test]
fn steps_pair_with_their_layers_over_a_base_without_history() {
    let (_d, store) = temp_store();
    // A base whose config records no history (some tools write none).
    let mut t = TarBuilder::new();
    t.dir("etc", 0o755);
    let info = crate::layer::ingest(&store, &gzip(&t.finish())[..], None).unwrap();
    let mut config = new_config();
    config.rootfs.diff_ids = vec![info.diff_id];
    crate::image::write_image(
        &store,
        &config,
        &[layer_descriptor(&info)],
        Some(&Reference::parse("bare:1").unwrap()),
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "one.txt", b"1\n");
    build_in(
        &store,
        ctx.path(),
        "FROM bare:1\nENV X=1\nCOPY one.txt /one.txt\n",
    )
    .unwrap();
    let img = store.resolve("app:1").unwrap();
    // As `history` pairs them: each step that made a layer takes the next one.
    let made: Vec<_> = img
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .collect();
    assert_eq!(made.len(), img.manifest.layers.len(), "{made:#?}");
    assert_eq!(made[0].created_by, None, "the base layer's blank step");
    assert_eq!(made[1].created_by.as_deref(), Some("COPY one.txt /one.txt"));
    let idx = crate::layer::open_index(&store, &img.manifest.layers[1].digest).unwrap();
    let root = idx.find_dir(b"").unwrap();
    assert!(root.lookup(b"one.txt").0.is_some(), "the COPY's layer");
}

#[test]
fn add_and_import_agree_on_entries_under_a_symlink_of_the_archive() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let under = |t: &mut TarBuilder| {
        t.file("ok", 0o644, b"fine");
    };
    let mut through_abs = TarBuilder::new();
    under(&mut through_abs);
    through_abs
        .symlink("l", "/opt")
        .file("l/file", 0o644, b"through");
    let mut through_file = TarBuilder::new();
    under(&mut through_file);
    through_file.file("f", 0o644, b"").file("f/x", 0o644, b"x");
    for (name, tar, want) in [
        (
            "symlink",
            through_abs.finish(),
            "entry \"l/file\" is under \"l\", which this layer made a non-directory",
        ),
        (
            "file",
            through_file.finish(),
            "entry \"f/x\" is under \"f\", which this layer made a non-directory",
        ),
    ] {
        write(ctx.path(), "t.tar", &tar);
        let add = build_in(&store, ctx.path(), "FROM base:1\nADD t.tar /x/\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let imported = import(&store, &tar[..], None, &ImportOptions::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        for err in [&add, &imported] {
            assert!(err.contains(want) && !err.contains('\n'), "{name}: {err}");
        }
    }
}

#[test]
fn config_only_steps_store_one_image_not_one_each() {
    const STEPS: usize = 2000;
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let mut dockerfile = String::from("FROM base:1\n");
    for i in 0..STEPS {
        dockerfile.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    dockerfile.push_str("LABEL last=yes\n");
    let before = store.list_blobs().unwrap().len();
    let first = build_in(&store, ctx.path(), &dockerfile).unwrap();
    let stored = store.list_blobs().unwrap().len() - before;
    assert_eq!(stored, 2, "one config and one manifest for {STEPS} steps");
    let config = store.read_config(&first.id).unwrap();
    let env = config.config.unwrap().env.unwrap();
    assert!(env.contains(&"V1999=value1999".to_string()));
    let steps: Vec<_> = config
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref().filter(|_| h.empty_layer))
        .collect();
    assert_eq!(steps.len(), STEPS + 1, "one empty-layer entry per step");
    assert_eq!(steps[0], "ENV V0=value0");
    assert_eq!(steps[STEPS], "LABEL last=yes");

    let again = build_in(&store, ctx.path(), &dockerfile).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.cached, STEPS + 1, "fully cached");
    assert_eq!(store.list_blobs().unwrap().len() - before, 2);

    // A changed step in the middle: the steps before it are still cached.
    let changed = dockerfile.replace("ENV V1000=value1000\n", "ENV V1000=other\n");
    let built = build_in(&store, ctx.path(), &changed).unwrap();
    assert_eq!(built.cached, 1000);
    assert_ne!(built.id, first.id);
    let env = store
        .read_config(&built.id)
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert!(env.contains(&"V1000=other".to_string()));
}

#[test]
fn a_run_of_config_steps_before_a_layer_step_is_cached_as_one() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "f.txt", b"f\n");
    let dockerfile = "FROM base:1\nENV A=1\nENV B=$A-2\nCOPY f.txt /f\nENV C=3\n";
    let before = store.list_blobs().unwrap().len();
    let first = build_in(&store, ctx.path(), dockerfile).unwrap();
    let blobs = store.list_blobs().unwrap().len();
    assert_eq!(
        blobs - before,
        5,
        "the COPY's layer and image, the last ENV's image; no image for ENV B alone"
    );
    let again = build_in(&store, ctx.path(), dockerfile).unwrap();
    assert_eq!((again.id, again.cached, again.new_layers), (first.id, 4, 0));
    assert_eq!(
        store.list_blobs().unwrap().len(),
        blobs,
        "nothing new stored"
    );
    let env = store
        .read_config(&first.id)
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert!(
        env.ends_with(&["A=1".into(), "B=1-2".into(), "C=3".into()]),
        "{env:?}"
    );
    // The image the COPY built on ends in ENV B, as it did step by step.
    let shorter = build_in(&store, ctx.path(), "FROM base:1\nENV A=1\n").unwrap();
    let env = store
        .read_config(&shorter.id)
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert!(!env.iter().any(|e| e.starts_with("B=")), "{env:?}");
}
