//! Multi-stage builds, ONBUILD, heredoc COPY, ARG before FROM and the
//! config fields Docker writes, over images made in code (no RUN, so no
//! mounts needed).

use super::tests::{base_image, listing, write};
use super::*;
use crate::testutil::temp_store;
use std::path::Path;

/// Builds `dockerfile` in `ctx` to `tag`, for `target`; (result, progress).
fn build_to(
    store: &Store,
    ctx: &Path,
    dockerfile: &str,
    tag: &str,
    target: Option<&str>,
) -> (Built, String) {
    write(ctx, "Dockerfile", dockerfile.as_bytes());
    let opts = BuildOptions {
        context: ctx.to_path_buf(),
        tag: Some(Reference::parse(tag).unwrap()),
        target: target.map(str::to_string),
        ..Default::default()
    };
    let mut out = Vec::new();
    let built = build(store, &opts, &mut out).unwrap();
    (built, String::from_utf8(out).unwrap())
}

/// The error of building the Dockerfile in `ctx` as `opts` says (the
/// context set here).
fn build_error(store: &Store, ctx: &Path, opts: BuildOptions) -> String {
    let opts = BuildOptions {
        context: ctx.to_path_buf(),
        ..opts
    };
    build(store, &opts, &mut std::io::sink())
        .unwrap_err()
        .to_string()
}

/// The created_by of each history entry of image `id`.
fn created_by(store: &Store, id: &crate::oci::Digest) -> Vec<String> {
    let config = store.read_config(id).unwrap();
    config
        .history
        .into_iter()
        .filter_map(|h| h.created_by)
        .collect()
}

/// The STEP lines of a build's progress, and which of them were cached.
fn steps(progress: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for l in progress.lines() {
        if let Some(rest) = l.strip_prefix("STEP ") {
            let text = rest.split_once(": ").map_or(rest, |(_, t)| t);
            out.push((text.to_string(), false));
        } else if l.starts_with("--> Using cache")
            && let Some(last) = out.last_mut()
        {
            last.1 = true;
        }
    }
    out
}

const MULTI: &str = "\
ARG APP=app
FROM base:1 AS build
ARG APP
COPY --chown=app:app $APP /opt/app
RUN_PLACEHOLDER
FROM scratch AS docs
COPY docs.txt /docs/
FROM base:1 AS unused
COPY nope /nope
FROM base:1
COPY --from=build /opt/app /srv/
COPY --from=1 /docs/docs.txt /docs.txt
COPY --from=base:1 /etc/optlink /linked
COPY --from=build --chown=0:0 --chmod=700 /opt/app/a.txt /opt/app/sub/b.txt /priv/
COPY --from=build /opt/app/s* /glob/
";

fn multi() -> String {
    MULTI.replace("RUN_PLACEHOLDER\n", "ENV STAGE=build\n")
}

fn multi_context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(c, "app/a.txt", b"file a\n");
    write(c, "app/sub/b.txt", b"file b\n");
    std::os::unix::fs::symlink("a.txt", c.join("app/link")).unwrap();
    write(c, "docs.txt", b"docs v1\n");
    ctx
}

#[test]
fn stages_copy_from_each_other_and_from_images() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = multi_context();
    let (built, progress) = build_to(&store, ctx.path(), &multi(), "app:1", None);
    assert!(
        !progress.contains("COPY nope"),
        "a stage the target does not need is not built: {progress}"
    );
    let img = store.resolve("app:1").unwrap();
    assert_eq!(img.id(), built.id);
    let l = listing(&store, &img.manifest_digest);
    let get = |p: &str| l.get(p).unwrap_or_else(|| panic!("{p} missing: {l:#?}"));
    // COPY --from keeps the owners and modes of the stage's files.
    assert_eq!(
        get("srv/a.txt"),
        &('f', 0o644, "1001:1002".into(), "file a\n".into())
    );
    assert_eq!(get("srv/sub/b.txt").2, "1001:1002");
    assert_eq!(get("srv/sub").0, 'd');
    assert_eq!(
        get("srv/link"),
        &('l', 0o777, "1001:1002".into(), "a.txt".into())
    );
    assert_eq!(get("docs.txt").3, "docs v1\n");
    // A symlink named as the source is followed, inside the source image.
    assert_eq!(get("linked").0, 'd', "etc/optlink is ../opt, a directory");
    assert_eq!(
        get("priv/a.txt"),
        &('f', 0o700, "0:0".into(), "file a\n".into())
    );
    assert_eq!(get("priv/b.txt").1, 0o700);
    assert_eq!(get("glob/b.txt").3, "file b\n", "s* matched sub/");
    assert!(
        !l.contains_key("opt/app/a.txt"),
        "the build stage's tree stays there"
    );
    assert!(!l.contains_key("nope"));
    let history = created_by(&store, &built.id);
    assert!(
        history.contains(&"COPY --from=build /opt/app /srv/".to_string()),
        "{history:#?}"
    );
    assert!(
        !history.iter().any(|h| h.contains("docs.txt /docs/")),
        "the final image's history is its own stage's: {history:#?}"
    );

    // --target builds that stage and the ones it needs, no more.
    let (_, progress) = build_to(&store, ctx.path(), &multi(), "app:build", Some("build"));
    let ran: Vec<String> = steps(&progress).into_iter().map(|s| s.0).collect();
    assert_eq!(
        ran,
        [
            "ARG APP=app",
            "FROM base:1 AS build",
            "ARG APP",
            "COPY --chown=app:app $APP /opt/app",
            "ENV STAGE=build"
        ]
    );
    let b = store.resolve("app:build").unwrap();
    let l = listing(&store, &b.manifest_digest);
    assert_eq!(l["opt/app/a.txt"].2, "1001:1002");
    assert!(!l.contains_key("srv"));
    let env = b.config.config.unwrap().env.unwrap();
    assert!(env.contains(&"STAGE=build".to_string()), "{env:?}");
    let e = build_error(
        &store,
        ctx.path(),
        BuildOptions {
            target: Some("nope".into()),
            ..Default::default()
        },
    );
    assert!(
        e.starts_with("target stage \"nope\" could not be found in "),
        "{e}"
    );
}

#[test]
fn a_change_rebuilds_only_the_stages_and_steps_that_depend_on_it() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = multi_context();
    let (first, _) = build_to(&store, ctx.path(), &multi(), "app:1", None);
    let (again, progress) = build_to(&store, ctx.path(), &multi(), "app:1", None);
    assert_eq!(again.id, first.id, "an unchanged build is all cache");
    assert!(
        steps(&progress)
            .iter()
            .filter(|s| !s.0.starts_with("FROM") && !s.0.starts_with("ARG"))
            .all(|s| s.1),
        "{progress}"
    );

    // docs.txt is read by stage docs, and by the final stage through it.
    write(ctx.path(), "docs.txt", b"docs v2\n");
    let (changed, progress) = build_to(&store, ctx.path(), &multi(), "app:1", None);
    let not_cached: Vec<String> = steps(&progress)
        .into_iter()
        .filter(|(t, cached)| !cached && !t.starts_with("FROM") && !t.starts_with("ARG"))
        .map(|s| s.0)
        .collect();
    assert_eq!(
        not_cached,
        [
            "COPY docs.txt /docs/",
            "COPY --from=1 /docs/docs.txt /docs.txt",
            "COPY --from=base:1 /etc/optlink /linked",
            "COPY --from=build --chown=0:0 --chmod=700 /opt/app/a.txt /opt/app/sub/b.txt /priv/",
            "COPY --from=build /opt/app/s* /glob/",
        ],
        "stage build is cached, and the final stage up to its first COPY from docs: {progress}"
    );
    assert_eq!(changed.new_layers, 5);
    let l = listing(&store, &store.resolve("app:1").unwrap().manifest_digest);
    assert_eq!(l["docs.txt"].3, "docs v2\n");

    // A change to stage build that leaves the files copied from it as they
    // were: the COPY --from steps are cached (keyed by what they copy).
    let other = MULTI.replace("RUN_PLACEHOLDER\n", "ENV STAGE=other\n");
    let (same, progress) = build_to(&store, ctx.path(), &other, "app:1", None);
    let not_cached: Vec<String> = steps(&progress)
        .into_iter()
        .filter(|(t, cached)| !cached && !t.starts_with("FROM") && !t.starts_with("ARG"))
        .map(|s| s.0)
        .collect();
    assert_eq!(not_cached, ["ENV STAGE=other"], "{progress}");
    assert_eq!((same.id, same.new_layers), (changed.id, 0));
}

#[test]
fn arg_before_from_follows_dockers_scoping() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let df = "\
ARG TAG=1
ARG WHO=global
FROM base:$TAG
ARG WHO
ENV IN_STAGE=$WHO NOT_DECLARED=x${TAG}x
LABEL tag=$TAG
";
    let (built, _) = build_to(&store, ctx.path(), df, "app:1", None);
    let cc = store.read_config(&built.id).unwrap().config.unwrap();
    let env = cc.env.unwrap();
    assert!(env.contains(&"IN_STAGE=global".to_string()), "{env:?}");
    assert!(
        env.contains(&"NOT_DECLARED=xx".to_string()),
        "an ARG before FROM is not seen in a stage that does not declare it: {env:?}"
    );
    assert_eq!(cc.labels.unwrap()["tag"], "");
    // A build arg overrides the global default, in the stage and in FROM.
    let opts = |args: &[(&str, &str)]| BuildOptions {
        context: ctx.path().to_path_buf(),
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let cli = build(&store, &opts(&[("WHO", "cli")]), &mut std::io::sink()).unwrap();
    let env = store
        .read_config(&cli.id)
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert!(env.contains(&"IN_STAGE=cli".to_string()), "{env:?}");
    let e = build_error(&store, ctx.path(), opts(&[("TAG", "2")]));
    assert!(
        e.contains("Dockerfile:3: FROM base:$TAG: image base:2"),
        "{e}"
    );
}

#[test]
fn heredoc_copies_are_files() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let df = "FROM base:1\n\
        ARG NAME=world\n\
        COPY <<EOF /etc/motd\n\
        hello $NAME \"quoted\" \\$NAME\n\
        EOF\n\
        COPY <<'EOF' /raw\n\
        $NAME stays\n\
        EOF\n\
        COPY --chmod=755 <<-one.sh <<two.sh /bin/\n\
        \t#!/bin/sh\n\
        \techo one\n\
        one.sh\n\
        \techo two\n\
        two.sh\n";
    let (built, _) = build_to(&store, ctx.path(), df, "app:1", None);
    let m = store.resolve("app:1").unwrap().manifest_digest;
    let l = listing(&store, &m);
    assert_eq!(
        l["etc/motd"],
        (
            'f',
            0o644,
            "0:0".into(),
            "hello world \"quoted\" \\$NAME\n".into()
        )
    );
    assert_eq!(l["raw"].3, "$NAME stays\n");
    assert_eq!(
        l["bin/one.sh"],
        ('f', 0o755, "0:0".into(), "#!/bin/sh\necho one\n".into())
    );
    assert_eq!(l["bin/two.sh"].3, "\techo two\n");
    let history = created_by(&store, &built.id);
    assert!(
        history.contains(&"COPY <<EOF /etc/motd".to_string()),
        "{history:?}"
    );
    // A changed document is a changed step.
    let (again, _) = build_to(&store, ctx.path(), df, "app:1", None);
    assert_eq!(again.id, built.id);
    let (changed, _) = build_to(
        &store,
        ctx.path(),
        &df.replace("stays", "moved"),
        "app:1",
        None,
    );
    assert_ne!(changed.id, built.id);
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "child.txt", b"from the child's context\n");
    let base = "FROM base:1\n\
        ONBUILD COPY child.txt /onbuild/\n\
        ONBUILD ENV TRIGGERED=yes\n\
        LABEL role=base\n";
    let (b, _) = build_to(&store, ctx.path(), base, "obbase:1", None);
    let cc = store.read_config(&b.id).unwrap().config.unwrap();
    assert_eq!(
        cc.on_build.unwrap(),
        ["COPY child.txt /onbuild/", "ENV TRIGGERED=yes"]
    );
    let l = listing(&store, &store.resolve("obbase:1").unwrap().manifest_digest);
    assert!(
        !l.contains_key("onbuild"),
        "triggers do not run in the base"
    );

    let (child, progress) = build_to(
        &store,
        ctx.path(),
        "FROM obbase:1\nLABEL role=child\n",
        "obchild:1",
        None,
    );
    assert!(
        progress.contains("running ONBUILD trigger: COPY child.txt /onbuild/"),
        "{progress}"
    );
    let l = listing(&store, &store.resolve("obchild:1").unwrap().manifest_digest);
    assert_eq!(l["onbuild/child.txt"].3, "from the child's context\n");
    let cc = store.read_config(&child.id).unwrap().config.unwrap();
    assert_eq!(cc.on_build, None, "the child stores no triggers");
    assert!(cc.env.unwrap().contains(&"TRIGGERED=yes".to_string()));
    assert_eq!(cc.labels.unwrap()["role"], "child");
    // Even with nothing after FROM, the child drops the triggers.
    let (bare, _) = build_to(&store, ctx.path(), "FROM obbase:1\n", "obchild:2", None);
    assert_eq!(
        store
            .read_config(&bare.id)
            .unwrap()
            .config
            .unwrap()
            .on_build,
        None
    );
    // A trigger that fails names the child's FROM line.
    std::fs::remove_file(ctx.path().join("child.txt")).unwrap();
    write(ctx.path(), "Dockerfile", b"# child\nFROM obbase:1\n");
    let e = build_error(&store, ctx.path(), BuildOptions::default());
    assert!(
        e.contains(
            "Dockerfile:2: FROM obbase:1: ONBUILD COPY child.txt /onbuild/: child.txt: no such file"
        ),
        "{e}"
    );
}

#[test]
fn config_fields_are_written_as_docker_writes_them() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let df = "FROM base:1\n\
        HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1\n\
        STOPSIGNAL SIGTERM\n\
        VOLUME /data /logs\n\
        VOLUME [\"/a\", \"/b\"]\n\
        SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\n\
        CMD echo hi\n\
        ONBUILD LABEL from=trigger\n";
    let (built, _) = build_to(&store, ctx.path(), df, "app:1", None);
    let m = store.read_manifest(&built.manifest.digest).unwrap();
    let raw = store.read_blob(&m.config.digest).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let c = &json["config"];
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
            "Interval": 30_000_000_000u64,
            "Timeout": 3_000_000_000u64,
            "Retries": 3
        })
    );
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Volumes"],
        serde_json::json!({"/data": {}, "/logs": {}, "/a": {}, "/b": {}})
    );
    assert_eq!(c["Shell"], serde_json::json!(["/bin/bash", "-eu", "-c"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/bash", "-eu", "-c", "echo hi"])
    );
    assert_eq!(c["OnBuild"], serde_json::json!(["LABEL from=trigger"]));
    // NONE turns off a base's check; the SHELL is inherited by a child.
    let (child, _) = build_to(
        &store,
        ctx.path(),
        "FROM app:1\nHEALTHCHECK NONE\nCMD ls\n",
        "app:2",
        None,
    );
    let cc = store.read_config(&child.id).unwrap().config.unwrap();
    assert_eq!(cc.healthcheck.unwrap().test, ["NONE"]);
    assert_eq!(cc.cmd.unwrap(), ["/bin/bash", "-eu", "-c", "ls"]);
    assert_eq!(cc.labels.unwrap()["from"], "trigger");
}

#[test]
fn chmod_link_and_parents() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = multi_context();
    write(ctx.path(), "one.txt", b"1\n");
    let df = "FROM base:1\n\
        COPY --parents app/sub/b.txt one.txt /p/\n\
        COPY --parents app /q/\n\
        COPY --link one.txt /linked.txt\n\
        ADD --chmod=600 one.txt /added\n\
        COPY --chmod=751 app/a.txt /x\n";
    let (built, _) = build_to(&store, ctx.path(), df, "app:1", None);
    assert_eq!(built.new_layers, 5, "each a layer of its own");
    let l = listing(&store, &store.resolve("app:1").unwrap().manifest_digest);
    let get = |p: &str| l.get(p).unwrap_or_else(|| panic!("{p} missing: {l:#?}"));
    assert_eq!(get("p/app/sub/b.txt").3, "file b\n");
    assert_eq!(get("p/one.txt").3, "1\n");
    assert_eq!(get("q/app/a.txt").3, "file a\n");
    assert_eq!(get("q/app/link").0, 'l');
    assert_eq!(get("linked.txt").3, "1\n");
    assert_eq!(get("added").1, 0o600);
    assert_eq!(get("x").1, 0o751);
    let history = created_by(&store, &built.id);
    assert!(
        history.contains(&"COPY --link one.txt /linked.txt".to_string()),
        "{history:?}"
    );
    assert!(
        history.contains(&"COPY --parents app /q/".to_string()),
        "{history:?}"
    );
}

#[test]
fn platform_args_and_from_platform() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let host = crate::oci::Platform::host();
    let df = "FROM --platform=$BUILDPLATFORM base:1 AS build\n\
        ARG TARGETARCH\n\
        ARG TARGETOS\n\
        ENV ARCH=$TARGETARCH OS=$TARGETOS UNDECLARED=x${BUILDARCH}x\n\
        FROM --platform=other/arch base:1\n";
    let (built, _) = build_to(&store, ctx.path(), df, "app:1", Some("build"));
    let env = store
        .read_config(&built.id)
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert_eq!(
        env,
        [
            format!("ARCH={}", host.architecture),
            format!("OS={}", host.os),
            "UNDECLARED=xx".to_string()
        ]
    );
    write(ctx.path(), "Dockerfile", df.as_bytes());
    let e = build_error(&store, ctx.path(), BuildOptions::default());
    assert!(
        e.contains("Dockerfile:5: FROM --platform=other/arch base:1: FROM --platform=other/arch: only this machine's platform"),
        "{e}"
    );
}

#[test]
fn copy_from_keeps_xattrs() {
    use crate::image::{ImportOptions, import};
    use crate::testutil::{TarBuilder, gzip};
    let (_d, store) = temp_store();
    base_image(&store);
    let mut t = TarBuilder::new();
    t.dir("bin", 0o755).xattr_file(
        "bin/ping",
        &[("security.capability", b"cap\x01"), ("user.note", b"n")],
        b"ping",
    );
    import(
        &store,
        &gzip(&t.finish())[..],
        Some(&Reference::parse("caps:1").unwrap()),
        &ImportOptions::default(),
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let (built, _) = build_to(
        &store,
        ctx.path(),
        "FROM base:1\nCOPY --from=caps:1 /bin/ping /usr/bin/ping\n",
        "app:1",
        None,
    );
    let m = store.read_manifest(&built.manifest.digest).unwrap();
    let layers: Vec<_> = m.layers.iter().map(|l| l.digest).collect();
    let mut tree = copy::ImageTree::open(&store, &layers).unwrap();
    let r = tree.resolve(b"usr/bin/ping", false).unwrap();
    let mut xattrs = tree.xattrs_at(&r.path);
    xattrs.sort();
    assert_eq!(
        xattrs,
        [
            (b"security.capability".to_vec(), b"cap\x01".to_vec()),
            (b"user.note".to_vec(), b"n".to_vec())
        ]
    );
}

#[test]
fn a_base_tagged_unchanged_keeps_its_manifest_size() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    let (built, _) = build_to(&store, ctx.path(), "FROM base:1\n", "same:1", None);
    let size = store.blob_size(&built.manifest.digest).unwrap();
    assert_eq!(built.manifest.size, size);
    let entry = store
        .image_entries()
        .unwrap()
        .into_iter()
        .find(|e| e.name() == Some("same:1"))
        .unwrap();
    assert_eq!(entry.descriptor.size, size);
}

#[test]
fn copy_from_keeps_hard_links() {
    use crate::image::{ImportOptions, import};
    use crate::testutil::{TarBuilder, gzip};
    let (_d, store) = temp_store();
    base_image(&store);
    let mut t = TarBuilder::new();
    t.dir("bin", 0o755)
        .file("bin/a", 0o755, b"same file")
        .hardlink("bin/b", "bin/a");
    import(
        &store,
        &gzip(&t.finish())[..],
        Some(&Reference::parse("links:1").unwrap()),
        &ImportOptions::default(),
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let (built, _) = build_to(
        &store,
        ctx.path(),
        "FROM base:1\nCOPY --from=links:1 /bin /b2/\n",
        "app:1",
        None,
    );
    let m = store.read_manifest(&built.manifest.digest).unwrap();
    let last = m.layers.last().unwrap().digest;
    let r = crate::layer::decompressed(store.open_blob(&last).unwrap()).unwrap();
    let mut ar = tar::Archive::new(r);
    let members: Vec<(String, tar::EntryType)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (path, e.header().entry_type())
        })
        .collect();
    assert_eq!(
        members,
        [
            ("b2/".to_string(), tar::EntryType::Directory),
            ("b2/a".to_string(), tar::EntryType::Regular),
            ("b2/b".to_string(), tar::EntryType::Link),
        ]
    );
    let l = listing(&store, &built.manifest.digest);
    assert_eq!(l["b2/b"].3, "b2/a", "{l:#?}");
}

#[test]
fn bad_multi_stage_input_is_a_one_line_error_naming_its_line() {
    let (_d, store) = temp_store();
    base_image(&store);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "a", b"a");
    let table = [
        (
            "FROM base:1\nCOPY --from= /a /b\n",
            "Dockerfile:2: COPY --from= /a /b: --from needs a stage or an image",
        ),
        (
            "FROM base:1 AS a\nFROM a\nCOPY --from=a /nope* /x/\n",
            "Dockerfile:3: COPY --from=a /nope* /x/: /nope*: no file matches",
        ),
        (
            "FROM base:1 AS a\nFROM a\nCOPY --from=a --parents /etc /y/\n",
            "Dockerfile:3: COPY --from=a --parents /etc /y/: COPY --parents with --from",
        ),
        (
            "FROM base:1\nCOPY <<EOF\nx\nEOF\n",
            "Dockerfile:2: COPY <<EOF: COPY needs a source and a destination",
        ),
        (
            "FROM base:1\nHEALTHCHECK --interval=1x CMD true\n",
            "Dockerfile:2: --interval=1x: \"1x\" is not a duration",
        ),
        (
            "FROM base:1\nONBUILD FROM x\n",
            "Dockerfile:2: FROM is not allowed",
        ),
        (
            "FROM base:1 AS 9\n",
            "Dockerfile:1: invalid stage name \"9\"",
        ),
    ];
    for (df, want) in table {
        write(ctx.path(), "Dockerfile", df.as_bytes());
        let e = build_error(&store, ctx.path(), BuildOptions::default());
        assert!(e.contains(want) && !e.contains('\n'), "{df:?}: {e}");
    }
}
