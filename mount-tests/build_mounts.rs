//! `RUN --mount` and the build command's flags, on Debian minbase: a secret
//! is seen by RUN and found in no layer, no history entry, no cache record
//! (nor anywhere else in the store); a cache mount keeps its contents
//! across builds until `build prune`; context binds (read-only and rw),
//! tmpfs; several -t, --label, --iidfile, -q, a tar or a Dockerfile on
//! stdin, the proxy build args.

use crate::support::Env;
use crate::support::containers::{layer_paths, layers_of, minbase_env};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

fn last_line(out: &str) -> String {
    out.lines().last().unwrap_or_default().to_string()
}

/// `cat PATH` in a container of `image`.
fn cat(env: &Env, image: &str, path: &str) -> String {
    env.ok(&["run", "--rm", image, "cat", path])
}

/// Every file under `dir` whose bytes (decompressed, for a gzip or zstd
/// blob) contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
                continue;
            }
            if !md.is_file() {
                continue;
            }
            let Ok(f) = std::fs::File::open(&p) else {
                continue;
            };
            let mut bytes = Vec::new();
            let Ok(mut r) = layerfs::layer::decompressed(f) else {
                continue;
            };
            let _ = r.read_to_end(&mut bytes);
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

const SECRET: &[u8] = b"s3cr3t-value-7f1c9e";
const SECRET_2: &[u8] = b"another-s3cr3t-4a2b";

const SECRET_DOCKERFILE: &str = r#"FROM debian:minbase
RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /sum.txt \
 && stat -c '%a %u %g' /run/secrets/token > /default-stat.txt
RUN --mount=type=secret,id=token,env=TOKEN test ! -e /run/secrets/token \
 && printf %s "$TOKEN" | sha256sum | cut -c1-64 > /env-sum.txt
RUN --mount=type=secret,id=token,target=/etc/app-key,mode=0440,uid=1,gid=2 \
    stat -c '%a %u %g' /etc/app-key > /key-stat.txt
RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /absent.txt
"#;

#[test]
fn a_secret_is_seen_by_run_and_kept_out_of_layers_history_and_the_cache() {
    const T: &str = "a_secret_is_seen_by_run_and_kept_out_of_layers_history_and_the_cache";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", SECRET_DOCKERFILE.as_bytes());
    let secret_file = env.dir.path().join("token.txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    let ctx_s = ctx.to_str().unwrap();
    let spec = format!("id=token,src={}", secret_file.display());
    let first = env.ok(&["build", "--secret", &spec, "-t", "sec:1", ctx_s]);

    let sum = layerfs::oci::Digest::of(SECRET).hex();
    assert_eq!(cat(&env, "sec:1", "/sum.txt"), format!("{sum}\n"));
    assert_eq!(cat(&env, "sec:1", "/env-sum.txt"), format!("{sum}\n"));
    assert_eq!(cat(&env, "sec:1", "/default-stat.txt"), "400 0 0\n");
    assert_eq!(cat(&env, "sec:1", "/key-stat.txt"), "440 1 2\n");
    assert_eq!(cat(&env, "sec:1", "/absent.txt"), "skipped\n");
    // Nor did the mountpoints stay.
    for l in &layers_of(&env, "sec:1")[1..] {
        let paths = layer_paths(&env, l);
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("run/secrets") || p == "etc/app-key"),
            "{paths:?}"
        );
    }
    // No layer, config (history), cache record or leftover holds the
    // secret's bytes: every file of the store, decompressed.
    let found = files_containing(&env.root(), SECRET);
    assert!(found.is_empty(), "the secret is in the store: {found:?}");
    let history = env.ok(&["history", "--no-trunc", "sec:1"]);
    assert!(!history.contains(std::str::from_utf8(SECRET).unwrap()));
    assert!(
        history.contains("sha256sum /run/secrets/token"),
        "{history}"
    );
    let cache = std::fs::read(env.root().join("layerfs/build-cache/cache.json")).unwrap();
    assert!(!cache.windows(SECRET.len()).any(|w| w == SECRET));

    // Another value for the secret is no other key: every step is cached.
    std::fs::write(&secret_file, SECRET_2).unwrap();
    let again = env.ok(&["build", "--secret", &spec, "-t", "sec:2", ctx_s]);
    assert_eq!(again.matches("--> Using cache").count(), 4, "{again}");
    assert_eq!(last_line(&again), last_line(&first));
    assert!(files_containing(&env.root(), SECRET_2).is_empty());

    // A secret no --secret gives, when required, fails the step clearly.
    write(
        &ctx,
        "Dockerfile",
        b"FROM debian:minbase\nRUN --mount=type=secret,id=nope,required true\n",
    );
    let out = env.run(&["build", ctx_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret nope is required"), "{err}");
}

const CACHE_DOCKERFILE: &str = r#"FROM debian:minbase
ARG N
RUN --mount=type=cache,target=/var/cache/app,id=app,uid=1,gid=2,mode=0750 \
    echo "run-$N" >> /var/cache/app/log && cat /var/cache/app/log > /seen.txt \
 && stat -c '%a %u %g' /var/cache/app > /cache-stat.txt
RUN --mount=type=bind,source=app,target=/src cat /src/a.txt > /from-bind.txt \
 && ! touch /src/new 2>/dev/null && echo ro > /bind-ro.txt
RUN --mount=type=bind,source=app,target=/src,rw touch /src/new && rm /src/a.txt && echo rw > /bind-rw.txt
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && grep -q ' /scratch tmpfs' /proc/mounts \
 && echo tmpfs > /tmpfs.txt
"#;

#[test]
fn a_cache_mount_is_kept_across_builds_until_prune_and_binds_and_tmpfs_leave_no_trace() {
    const T: &str =
        "a_cache_mount_is_kept_across_builds_until_prune_and_binds_and_tmpfs_leave_no_trace";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", CACHE_DOCKERFILE.as_bytes());
    write(&ctx, "app/a.txt", b"from the context\n");
    write(&ctx, "app/skip.log", b"ignored\n");
    write(&ctx, ".dockerignore", b"**/*.log\n");
    let ctx_s = ctx.to_str().unwrap();
    env.ok(&["build", "--build-arg", "N=1", "-t", "c:1", ctx_s]);
    assert_eq!(cat(&env, "c:1", "/seen.txt"), "run-1\n");
    assert_eq!(cat(&env, "c:1", "/cache-stat.txt"), "750 1 2\n");
    assert_eq!(cat(&env, "c:1", "/from-bind.txt"), "from the context\n");
    assert_eq!(cat(&env, "c:1", "/bind-ro.txt"), "ro\n");
    assert_eq!(cat(&env, "c:1", "/bind-rw.txt"), "rw\n");
    assert_eq!(cat(&env, "c:1", "/tmpfs.txt"), "tmpfs\n");
    // An rw bind's writes are discarded: the context is as it was.
    assert!(ctx.join("app/a.txt").exists() && !ctx.join("app/new").exists());
    for l in &layers_of(&env, "c:1")[1..] {
        let paths = layer_paths(&env, l);
        assert!(
            !paths.iter().any(|p| p.starts_with("var/cache/app")
                || p.starts_with("src")
                || p.starts_with("scratch")),
            "a mount reached a layer: {paths:?}"
        );
    }

    // The cache directory outlives the build; other args re-run the step.
    let second = env.ok(&["build", "--build-arg", "N=2", "-t", "c:2", ctx_s]);
    assert_eq!(cat(&env, "c:2", "/seen.txt"), "run-1\nrun-2\n");
    // The bind's source is in the key: a change in it re-runs that step only.
    assert!(second.contains("Using cache") || !second.is_empty());
    write(&ctx, "app/a.txt", b"changed\n");
    let third = env.ok(&["build", "--build-arg", "N=2", "-t", "c:3", ctx_s]);
    assert_eq!(third.matches("--> Using cache").count(), 1, "{third}");
    assert_eq!(cat(&env, "c:3", "/from-bind.txt"), "changed\n");
    // An ignored file in the bind's source is no part of the key.
    write(&ctx, "app/skip.log", b"ignored, changed\n");
    let fourth = env.ok(&["build", "--build-arg", "N=2", "-t", "c:3", ctx_s]);
    assert_eq!(last_line(&fourth), last_line(&third), "{fourth}");

    let pruned = env.ok(&["build", "prune"]);
    assert!(pruned.contains("reclaimed"), "{pruned}");
    let after = env.ok(&["build", "--build-arg", "N=3", "-t", "c:4", ctx_s]);
    assert_eq!(after.matches("--> Using cache").count(), 0, "{after}");
    assert_eq!(
        cat(&env, "c:4", "/seen.txt"),
        "run-3\n",
        "prune emptied the cache mount"
    );
    // The tagged images are whole after prune --all and gc.
    env.ok(&["build", "prune", "--all"]);
    assert_eq!(cat(&env, "c:1", "/seen.txt"), "run-1\n");
    let rebuilt = env.ok(&["build", "--build-arg", "N=3", "-t", "c:4", ctx_s]);
    assert_eq!(rebuilt.matches("--> Using cache").count(), 0, "{rebuilt}");
}

#[test]
fn build_flags_tags_labels_iidfile_quiet_stdin_and_proxy_args() {
    const T: &str = "build_flags_tags_labels_iidfile_quiet_stdin_and_proxy_args";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM debian:minbase\nCOPY a.txt /a.txt\nRUN echo \"proxy=$HTTP_PROXY\" > /proxy.txt; echo noise\n",
    );
    write(&ctx, "a.txt", b"a\n");
    let ctx_s = ctx.to_str().unwrap();
    let iid = env.dir.path().join("iid");
    let proxy = "http://user:pw@proxy.invalid:3128";
    let out = env.ok(&[
        "build",
        "-q",
        "-t",
        "multi:1",
        "-t",
        "other/multi:latest",
        "--label",
        "org.example.team=build",
        "--label",
        "version=2",
        "--build-arg",
        &format!("HTTP_PROXY={proxy}"),
        "--iidfile",
        iid.to_str().unwrap(),
        ctx_s,
    ]);
    let id = env
        .store
        .resolve("multi:1")
        .unwrap()
        .config_digest
        .to_string();
    assert_eq!(out, format!("{id}\n"), "-q prints the ID alone");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    assert_eq!(
        env.store
            .resolve("other/multi:latest")
            .unwrap()
            .config_digest
            .to_string(),
        id
    );
    let config = env.store.resolve("multi:1").unwrap().config;
    let labels = config.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(
        labels.get("org.example.team").map(String::as_str),
        Some("build")
    );
    assert_eq!(labels.get("version").map(String::as_str), Some("2"));
    // The proxy reached RUN without an ARG, and is nowhere in the image's
    // config or history.
    assert_eq!(
        cat(&env, "multi:1", "/proxy.txt"),
        format!("proxy={proxy}\n")
    );
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains("proxy.invalid"), "{json}");
    // Nor in the key: another proxy is the same build.
    let again = env.ok(&[
        "build",
        "--label",
        "org.example.team=build",
        "--label",
        "version=2",
        "--build-arg",
        "HTTP_PROXY=http://elsewhere:1",
        ctx_s,
    ]);
    assert!(!again.contains("[Warning]"), "{again}");
    assert_eq!(last_line(&again), id);
    let plain = last_line(&env.ok(&["build", ctx_s]));

    // A tar on stdin is the context.
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &ctx).unwrap();
    let tar = tar.into_inner().unwrap();
    let from_tar = build_stdin(&env, &["build", "-t", "fromtar", "-"], &tar);
    assert_eq!(last_line(&from_tar), plain, "the same build: {from_tar}");
    // A Dockerfile on stdin, with an empty context.
    let from_df = build_stdin(
        &env,
        &["build", "-t", "fromdf", "-"],
        b"FROM debian:minbase\nRUN echo hi > /hi.txt\n",
    );
    assert!(from_df.contains("STEP 2/2"), "{from_df}");
    assert_eq!(cat(&env, "fromdf", "/hi.txt"), "hi\n");
    // -f -: the Dockerfile on stdin, the context a directory.
    let df_stdin = build_stdin(
        &env,
        &["build", "-t", "dfstdin", "-f", "-", ctx_s],
        b"FROM debian:minbase\nCOPY a.txt /b.txt\n",
    );
    assert!(
        df_stdin.contains("STEP 2/2: COPY a.txt /b.txt"),
        "{df_stdin}"
    );
    assert_eq!(cat(&env, "dfstdin", "/b.txt"), "a\n");

    // A secret file that is not there fails the build before any step.
    let out = env.run(&["build", "--secret", "id=x,src=/nonexistent/secret", ctx_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secret id=x: /nonexistent/secret"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    // --pull asks the registry even for an image the store has: here one
    // that no registry serves, so the build fails saying so.
    env.ok(&["tag", "debian:minbase", "localhost:1/base:1"]);
    write(
        &ctx,
        "Dockerfile",
        b"FROM localhost:1/base:1\nCOPY a.txt /a.txt\n",
    );
    env.ok(&["build", ctx_s]);
    let out = env.run(&["build", "--pull", ctx_s]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--pull: pulling localhost:1/base:1 failed"),
        "{err}"
    );
}

fn build_stdin(env: &Env, args: &[&str], input: &[u8]) -> String {
    let mut child = env
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_bind_from_a_stage_shows_its_tree_and_keys_on_it() {
    const T: &str = "a_bind_from_a_stage_shows_its_tree_and_keys_on_it";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    let dockerfile = |data: &str| {
        format!(
            "FROM debian:minbase AS tools\n\
             RUN mkdir -p /out && echo {data} > /out/data.txt\n\
             FROM debian:minbase\n\
             RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools \
             cat /mnt/tools/data.txt > /got.txt && ! touch /mnt/tools/x 2>/dev/null\n\
             RUN --mount=type=bind,from=tools,target=/t,rw touch /t/new && echo rw > /rw.txt\n\
             RUN --mount=type=bind,from=debian:minbase,source=etc/debian_version,target=/v \
             cp /v /version.txt\n"
        )
    };
    write(&ctx, "Dockerfile", dockerfile("one").as_bytes());
    let ctx_s = ctx.to_str().unwrap();
    env.ok(&["build", "-t", "b:1", ctx_s]);
    assert_eq!(cat(&env, "b:1", "/got.txt"), "one\n");
    assert_eq!(cat(&env, "b:1", "/rw.txt"), "rw\n");
    let version = cat(&env, "debian:minbase", "/etc/debian_version");
    assert_eq!(cat(&env, "b:1", "/version.txt"), version);
    for l in &layers_of(&env, "b:1")[1..] {
        let paths = layer_paths(&env, l);
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("mnt/tools") || p == "t" || p.starts_with("t/") || p == "v"),
            "{paths:?}"
        );
    }
    // The stage's image is in the key: it changed, so the RUN runs again.
    write(&ctx, "Dockerfile", dockerfile("two").as_bytes());
    let out = env.ok(&["build", "-t", "b:2", ctx_s]);
    assert_eq!(out.matches("--> Using cache").count(), 0, "{out}");
    assert_eq!(cat(&env, "b:2", "/got.txt"), "two\n");
    let again = env.ok(&["build", "-t", "b:2", ctx_s]);
    assert_eq!(again.matches("--> Using cache").count(), 4, "{again}");
    // Nothing of the build stays mounted, nor any scratch dir.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = env.root().display().to_string();
    assert!(!mounts.contains(&root), "{mounts}");
    let left: Vec<_> = std::fs::read_dir(env.root().join("layerfs/build-run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
