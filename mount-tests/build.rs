//! `layerfs build` of a real Dockerfile on Debian minbase: local .debs
//! installed with dpkg, a user, a directory copied with --chown, ENV,
//! WORKDIR, USER, CMD; the result runs; a rebuild is served from the cache
//! and a changed file rebuilds from its step; buildah builds the same tree;
//! RUN's mountpoints never reach a layer; escapes from the context or the
//! image are stopped.

use crate::support::containers::{image_of, layer_paths, layers_of, minbase_env};
use crate::support::debian::debian_layers;
use crate::support::debs::debs;
use crate::support::{Env, Tar, can_mount, have_tool, tree};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DOCKERFILE: &str = r#"# A small application on Debian minbase
FROM debian:minbase
COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb \
 && rm -rf /tmp/debs
RUN useradd --create-home --uid 1001 appuser
COPY --chown=appuser:appuser app /opt/app
ENV GREETING="hello from layerfs" \
    APP_HOME=/opt/app
WORKDIR /opt/app/work
USER appuser
CMD ["sh", "-c", "hello; echo \"$GREETING\"; pwd; id -un; cat $APP_HOME/a.txt"]
"#;

fn write(dir: &Path, rel: &str, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The build context of DOCKERFILE; None after a loud skip.
pub(crate) fn context(env: &Env, test: &str) -> Option<PathBuf> {
    let debs = debs(test)?;
    let ctx = env.mkdir("ctx");
    for d in debs {
        std::fs::copy(d, ctx.join("debs").join(d.file_name().unwrap()))
            .or_else(|_| {
                std::fs::create_dir_all(ctx.join("debs"))?;
                std::fs::copy(d, ctx.join("debs").join(d.file_name().unwrap()))
            })
            .unwrap();
    }
    write(&ctx, "Dockerfile", DOCKERFILE.as_bytes(), 0o644);
    write(&ctx, ".dockerignore", b"*.md\n**/*.tmp\n", 0o644);
    write(&ctx, "README.md", b"not in the image\n", 0o644);
    write(&ctx, "app/a.txt", b"version 1\n", 0o644);
    write(&ctx, "app/sub/b.txt", b"private\n", 0o600);
    write(&ctx, "app/sub/scratch.tmp", b"ignored\n", 0o644);
    write(&ctx, "app/bin/greet", b"#!/bin/sh\necho greetings\n", 0o755);
    Some(ctx)
}

fn timed_build(env: &Env, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let out = env.ok(args);
    (out, start.elapsed())
}

fn image_id(build_output: &str) -> String {
    build_output.lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_debian_build_installs_debs_runs_and_is_cached() {
    const T: &str = "a_debian_build_installs_debs_runs_and_is_cached";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let Some(ctx) = context(&env, T) else { return };
    let ctx_s = ctx.to_str().unwrap();

    let (first, t_first) = timed_build(&env, &["build", "-t", "app:1", ctx_s]);
    assert!(first.contains("Setting up hello"), "dpkg ran: {first}");
    assert_eq!(first.matches("--> Using cache").count(), 0);
    // The store's own files keep our umask (a mount serving in the same
    // process needs it at 0 meanwhile).
    let (_, writable, _) = crate::support::sh(&format!(
        "find {} -path '*/upper' -prune -o -perm -0002 ! -type l -print",
        env.root().display()
    ));
    assert!(
        writable.trim().is_empty(),
        "world-writable in the store: {writable}"
    );

    let out = env.ok(&["run", "--rm", "app:1"]);
    assert_eq!(
        out,
        "Hello, world!\nhello from layerfs\n/opt/app/work\nappuser\nversion 1\n"
    );
    // procps came from a local .deb too: ps sees only the container.
    let ps = env.ok(&["run", "--rm", "app:1", "ps", "-eo", "pid=,user=,comm="]);
    // The init runs as the container's user (as `docker run --init`); the
    // command's pid is whatever the runtime's threads left.
    let rows: Vec<Vec<&str>> = ps.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{ps}");
    assert_eq!(rows[0], vec!["1", "appuser", "layerfs-init"], "{ps}");
    assert_eq!(rows[1][1..], ["appuser", "ps"], "{ps}");
    let ls = env.ok(&[
        "run",
        "--rm",
        "app:1",
        "ls",
        "-ln",
        "/opt/app/sub",
        "/opt/app/bin",
    ]);
    assert!(
        ls.contains("-rw------- 1 1001 1001 8 ") && ls.contains("b.txt"),
        "{ls}"
    );
    assert!(
        ls.contains("-rwxr-xr-x 1 1001 1001") && ls.contains("greet"),
        "{ls}"
    );
    assert!(!ls.contains("scratch.tmp"), ".dockerignore: {ls}");

    let layers = layers_of(&env, "app:1");
    assert_eq!(layers.len(), 6, "base + COPY, RUN, RUN, COPY, WORKDIR");
    for l in &layers[1..] {
        let paths = layer_paths(&env, l);
        assert!(
            !paths
                .iter()
                .any(|p| p == "etc/hosts" || p.starts_with("proc/") || p.starts_with("dev/")),
            "a RUN mountpoint leaked into a layer: {paths:?}"
        );
    }
    let history = env.ok(&["history", "--no-trunc", "app:1"]);
    assert!(
        history.contains("RUN useradd --create-home --uid 1001 appuser"),
        "{history}"
    );

    let blobs = env.store.list_blobs().unwrap().len();
    let (again, t_again) = timed_build(&env, &["build", "-t", "app:1", ctx_s]);
    assert_eq!(again.matches("--> Using cache").count(), 8, "{again}");
    assert_eq!(image_id(&again), image_id(&first));
    assert_eq!(env.store.list_blobs().unwrap().len(), blobs, "no new layer");

    write(&ctx, "app/a.txt", b"version 2\n", 0o644);
    let (changed, t_changed) = timed_build(&env, &["build", "-t", "app:1", ctx_s]);
    assert_eq!(
        changed.matches("--> Using cache").count(),
        3,
        "COPY debs and both RUNs come from the cache: {changed}"
    );
    assert!(!changed.contains("Setting up hello"));
    assert_ne!(image_id(&changed), image_id(&first));
    let new_layers = layers_of(&env, "app:1");
    assert_eq!(
        new_layers[..4],
        layers[..4],
        "the layers before COPY app are the same"
    );
    assert_ne!(new_layers[4], layers[4]);
    assert!(env.ok(&["run", "--rm", "app:1"]).ends_with("version 2\n"));

    eprintln!(
        "layerfs build times: first {t_first:.2?}, unchanged rebuild {t_again:.2?}, \
         one copied file changed {t_changed:.2?}"
    );
    assert!(t_again < t_first, "the cached build is faster");
    assert!(
        t_again < Duration::from_secs(5),
        "a cached build took {t_again:?}"
    );
}

/// Runs buildah with a throwaway vfs store; returns stdout.
pub(crate) fn buildah(root: &Path, args: &[&str]) -> String {
    let out = Command::new("buildah")
        .arg("--storage-driver=vfs")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("runroot"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A listing without its mtime column.
pub(crate) fn untimed(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.rsplit_once('\t').map_or(l, |(a, _)| a).to_string())
        .collect()
}

#[test]
fn buildah_builds_the_same_tree_from_the_same_dockerfile() {
    const T: &str = "buildah_builds_the_same_tree_from_the_same_dockerfile";
    if !have_tool("buildah", T) {
        return;
    }
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let Some(ctx) = context(&env, T) else { return };
    let ctx_s = ctx.to_str().unwrap();
    env.ok(&["build", "-t", "app:1", ctx_s]);
    let m = env.mount("app:1", &[]);
    let ours = untimed(&tree::listing(&m.path));

    // buildah reads our store as the OCI layout it is (through a lowercase
    // path: buildah names what it pulls after the path).
    let b = env.mkdir("buildah");
    let layout = PathBuf::from(format!("/var/tmp/layerfs-store-{}", std::process::id()));
    let _ = std::fs::remove_file(&layout);
    std::os::unix::fs::symlink(env.root(), &layout).unwrap();
    let pulled = buildah(
        &b,
        &[
            "pull",
            "-q",
            &format!("oci:{}:debian:minbase", layout.display()),
        ],
    );
    std::fs::remove_file(&layout).unwrap();
    buildah(&b, &["tag", pulled.trim(), "localhost/debian:minbase"]);
    buildah(
        &b,
        &[
            "bud",
            "--isolation=chroot",
            "--layers=false",
            "-q",
            "-t",
            "bapp",
            ctx_s,
        ],
    );
    let cname = buildah(&b, &["from", "bapp"]).trim().to_string();
    let root = PathBuf::from(buildah(&b, &["mount", &cname]).trim());
    let theirs = untimed(&tree::listing(&root));
    buildah(&b, &["umount", &cname]);
    buildah(&b, &["rm", &cname]);

    // Allowed: the empty /etc/hosts buildah leaves from its RUN steps (we
    // remove ours), and the contents of files that record when and where
    // they were written: dpkg's logs, and ldconfig's cache of the libraries'
    // inode numbers and times.
    const LOGS: [&str; 3] = [
        "./var/log/dpkg.log",
        "./var/log/alternatives.log",
        "./var/cache/ldconfig/aux-cache",
    ];
    let path = |l: &String| l.split('\t').next().unwrap_or_default().to_string();
    let meta = |l: &String| l.split('\t').take(4).collect::<Vec<_>>().join("\t");
    let only_theirs: Vec<&String> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    let only_ours: Vec<&String> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let mut unexplained = Vec::new();
    for l in &only_theirs {
        let p = path(l);
        let log_of_ours = LOGS.contains(&p.as_str())
            && only_ours.iter().any(|o| path(o) == p && meta(o) == meta(l));
        if !(p == "./etc/hosts" || log_of_ours) {
            unexplained.push(format!("- {l}"));
        }
    }
    for l in &only_ours {
        if !LOGS.contains(&path(l).as_str()) {
            unexplained.push(format!("+ {l}"));
        }
    }
    assert!(
        only_theirs.iter().any(|l| path(l) == "./etc/hosts"),
        "buildah's RUN leftover is where expected"
    );
    assert!(ours.len() > 6000, "{} entries", ours.len());
    assert!(
        unexplained.is_empty(),
        "layerfs (+) and buildah (-) differ:\n{}",
        unexplained.join("\n")
    );
    eprintln!(
        "buildah comparison: {} entries each side alike; buildah alone has ./etc/hosts; \
         contents differ only in {:?}",
        ours.len() - only_ours.len(),
        only_ours.iter().map(|l| path(l)).collect::<Vec<_>>()
    );
}

#[test]
fn a_run_step_leaves_no_mountpoints_in_its_layer() {
    const T: &str = "a_run_step_leaves_no_mountpoints_in_its_layer";
    if !can_mount(T) {
        return;
    }
    let Some(deb) = debian_layers(T) else { return };
    let env = Env::new();
    // Debian without /etc/resolv.conf, /proc and /sys: RUN must create
    // them to mount over, and take them away again.
    let base = env.image_files("debian:base", &[deb.gz()[0].clone()]);
    let gone = Tar::new()
        .file("etc/.wh.resolv.conf", 0o644, b"")
        .file(".wh.proc", 0o644, b"")
        .file(".wh.sys", 0o644, b"")
        .finish();
    let gone = layerfs::layer::ingest(&env.store, &gone[..], None).unwrap();
    image_of(&env, "debian:nomounts", &[base[0], gone], |_| {});
    let ctx = env.mkdir("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM debian:nomounts\n\
          RUN echo hi > /hello && cat /etc/resolv.conf > /resolv.seen && test -e /proc/self/exe\n\
          RUN rm /etc/motd\n",
        0o644,
    );
    env.ok(&["build", "-t", "built:1", ctx.to_str().unwrap()]);
    let layers = layers_of(&env, "built:1");
    let mut first = layer_paths(&env, &layers[2]);
    first.sort();
    assert_eq!(first, ["hello", "resolv.seen"]);
    let mut second = layer_paths(&env, &layers[3]);
    second.sort();
    assert_eq!(second, ["etc/", "etc/.wh.motd"]);
    let m = env.mount("built:1", &[]);
    assert_eq!(
        std::fs::read(m.join("resolv.seen")).unwrap(),
        std::fs::read("/etc/resolv.conf").unwrap(),
        "RUN saw the host's resolv.conf"
    );
    for p in ["etc/resolv.conf", "etc/hosts", "proc", "sys", "etc/motd"] {
        assert!(
            std::fs::symlink_metadata(m.join(p)).is_err(),
            "{p} is in the image"
        );
    }
}

#[test]
fn escapes_from_the_context_or_the_image_are_stopped() {
    const T: &str = "escapes_from_the_context_or_the_image_are_stopped";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let tag = format!("layerfs-escape-{}", std::process::id());
    let outside = env.mkdir("outside");
    write(
        &outside,
        "secret",
        format!("secret {tag}\n").as_bytes(),
        0o644,
    );
    let ctx = env.mkdir("ctx");
    write(
        &ctx,
        "payload",
        format!("payload {tag}\n").as_bytes(),
        0o644,
    );
    std::os::unix::fs::symlink("/etc", ctx.join("etc")).unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("outside")).unwrap();
    std::os::unix::fs::symlink("../outside", ctx.join("rel")).unwrap();
    let build = |dockerfile: &str| {
        write(&ctx, "Dockerfile", dockerfile.as_bytes(), 0o644);
        env.run(&["build", "-t", "escape:1", ctx.to_str().unwrap()])
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Sources through the context's symlinks to the host: refused.
    for src in ["etc/passwd", "outside/secret", "rel/secret", "outside"] {
        let out = build(&format!("FROM debian:minbase\nCOPY {src} /stolen\n"));
        assert_eq!(out.status.code(), Some(1), "COPY {src}");
        let e = stderr(&out);
        assert!(
            e.contains(&format!("Dockerfile:2: COPY {src} /stolen"))
                && e.contains("leaves the build context"),
            "{e}"
        );
    }
    assert!(env.store.resolve("escape:1").is_err());

    // Destinations through the image's symlinks to / and /etc: inside the image.
    let host_tmp = PathBuf::from(format!("/tmp/{tag}"));
    let host_etc = PathBuf::from(format!("/etc/{tag}"));
    let out = build(&format!(
        "FROM debian:minbase\n\
         RUN ln -s / /escape && ln -s /etc /etc-link && ! cat {}/secret\n\
         COPY payload /escape/tmp/{tag}\n\
         COPY payload /etc-link/{tag}\n\
         COPY . /ctx/\n",
        outside.display()
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !host_tmp.exists() && !host_etc.exists(),
        "written on the host"
    );
    let m = env.mount("escape:1", &[]);
    let payload = format!("payload {tag}\n").into_bytes();
    assert_eq!(
        std::fs::read(m.join(&format!("tmp/{tag}"))).unwrap(),
        payload
    );
    assert_eq!(
        std::fs::read(m.join(&format!("etc/{tag}"))).unwrap(),
        payload
    );
    assert_eq!(
        std::fs::read_link(m.join("ctx/etc")).unwrap(),
        Path::new("/etc")
    );
    let secret = format!("secret {tag}");
    let (ok, grep, _) = crate::support::sh(&format!(
        "grep -rl --no-messages '{secret}' {} || true",
        m.path.display()
    ));
    assert!(
        ok && grep.trim().is_empty(),
        "the host's secret is in the image: {grep}"
    );
    drop(m);

    // An archive whose members climb out of the destination.
    let name = format!("../../../../../../../../tmp/{tag}-tar");
    let evil = Tar::new()
        .file("fine", 0o644, b"fine")
        .raw(name.as_bytes(), tar::EntryType::Regular, b"pwned")
        .finish();
    std::fs::write(ctx.join("evil.tar"), &evil).unwrap();
    let out = build("FROM debian:minbase\n\nADD evil.tar /x/\n");
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("Dockerfile:3: ADD evil.tar /x/") && e.contains("leaves the destination"),
        "{e}"
    );
    assert!(!PathBuf::from(format!("/tmp/{tag}-tar")).exists());
}

#[test]
fn a_killed_build_leaves_nothing_running_and_the_next_one_tidies_up() {
    use crate::support::containers::{Running, in_mount_ns, mount_ns, processes};
    use crate::support::wait_until;
    const T: &str = "a_killed_build_leaves_nothing_running_and_the_next_one_tidies_up";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM debian:minbase\nRUN echo ready && exec sleep 1002\n",
        0o644,
    );
    let mut build = Running::start(&env, &["build", ctx.to_str().unwrap()]);
    wait_until(
        || processes(&["sleep", "1002"]).len() == 1,
        "the RUN command",
    );
    let build_ns = mount_ns(build.pid()).unwrap();
    let run_ns = mount_ns(processes(&["sleep", "1002"])[0]).unwrap();
    build.kill(nix::sys::signal::Signal::SIGKILL);
    build.wait();
    wait_until(
        || processes(&["sleep", "1002"]).is_empty(),
        "the RUN command to die with the build",
    );
    wait_until(
        || in_mount_ns(&build_ns).is_empty() && in_mount_ns(&run_ns).is_empty(),
        "the build's mount namespaces to empty",
    );
    assert!(
        env.ok(&["ps"]).contains("build-"),
        "the step's container stays"
    );
    // A user's container that merely looks like a dead build's is kept.
    env.ok(&[
        "run",
        "--name",
        "build-999999-1-1",
        "debian:minbase",
        "true",
    ]);
    write(&ctx, "Dockerfile", b"FROM debian:minbase\nENV A=1\n", 0o644);
    env.ok(&["build", ctx.to_str().unwrap()]);
    let ps = env.ok(&["ps"]);
    assert_eq!(
        ps.matches("build-").count(),
        1,
        "the step's container goes with the next build, the user's stays: {ps}"
    );
    assert!(ps.contains("build-999999-1-1"), "{ps}");
}
