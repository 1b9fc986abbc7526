//! Parity with buildah: real-world-style Dockerfiles (multi-stage builder
//! and runtime, cache/bind/tmpfs mounts, heredocs, an ONBUILD base and its
//! child, ARG before FROM, secrets) built from local .debs and files only,
//! each by `layerfs build` and by Debian's `buildah bud` (vfs storage of its
//! own, chroot isolation), then compared: the same file trees (but for what
//! buildah's RUN leaves: an empty /etc/hosts, the mountpoints it made) and
//! the same config fields (Env, Cmd, Entrypoint, WorkingDir, User, Labels
//! without buildah's own, Healthcheck, OnBuild, StopSignal, Volumes,
//! ExposedPorts).
//!
//! Debian's buildah (1.28) predates heredocs: for that Dockerfile it builds
//! the same steps spelled without them.

use crate::support::containers::minbase_env;
use crate::support::debs::debs;
use crate::support::{Env, have_tool, tree};
use std::path::{Path, PathBuf};

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

/// buildah over a vfs store of the test's own.
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    /// A buildah store holding our `debian:minbase` as localhost/debian:minbase.
    fn new(env: &Env) -> Buildah {
        let b = Buildah {
            dir: env.mkdir("buildah"),
        };
        // buildah reads our store as the OCI layout it is (through a
        // lowercase path: buildah names what it pulls after the path).
        let layout = PathBuf::from(format!(
            "/var/tmp/layerfs-parity-{}-{}",
            std::process::id(),
            env.dir
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
        ));
        let _ = std::fs::remove_file(&layout);
        std::os::unix::fs::symlink(env.root(), &layout).unwrap();
        let pulled = b.ok(&[
            "pull",
            "-q",
            &format!("oci:{}:debian:minbase", layout.display()),
        ]);
        std::fs::remove_file(&layout).unwrap();
        b.ok(&["tag", pulled.trim(), "localhost/debian:minbase"]);
        b
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::build::buildah(&self.dir, args)
    }

    fn bud(&self, tag: &str, extra: &[&str], ctx: &Path) {
        let mut args = vec![
            "bud",
            "--isolation=chroot",
            "--layers=false",
            "--format=docker",
            "-q",
            "-t",
            tag,
        ];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.ok(&args);
    }

    /// The listing of image `tag`'s tree.
    fn listing(&self, tag: &str) -> Vec<String> {
        let c = self.ok(&["from", tag]).trim().to_string();
        let root = PathBuf::from(self.ok(&["mount", &c]).trim());
        let l = untimed(&tree::listing(&root));
        self.ok(&["umount", &c]);
        self.ok(&["rm", &c]);
        l
    }

    /// The config fields compared, of image `tag`.
    fn config(&self, tag: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", "--type", "image", tag]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        fields(&v["Docker"]["config"])
    }
}

/// A listing without its mtime column.
fn untimed(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.rsplit_once('\t').map_or(l, |(a, _)| a).to_string())
        .collect()
}

const FIELDS: [&str; 11] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "Healthcheck",
    "OnBuild",
    "StopSignal",
    "Volumes",
    "ExposedPorts",
];

/// The compared fields of a config's `config` object; empty and missing
/// are alike, and buildah's own label is left out.
fn fields(config: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for f in FIELDS {
        let mut v = config.get(f).cloned().unwrap_or(serde_json::Value::Null);
        if f == "Labels"
            && let Some(m) = v.as_object_mut()
        {
            m.remove("io.buildah.version");
        }
        let empty = match &v {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(f.to_string(), v);
        }
    }
    serde_json::Value::Object(out)
}

fn our_config(env: &Env, tag: &str) -> serde_json::Value {
    let config = env.store.resolve(tag).unwrap().config;
    let v = serde_json::to_value(&config).unwrap();
    fields(&v["config"])
}

/// Files that record when they were written (dpkg's logs, ldconfig's
/// cache of inode numbers and times): their contents may differ.
const LOGS: [&str; 3] = [
    "./var/log/dpkg.log",
    "./var/log/alternatives.log",
    "./var/cache/ldconfig/aux-cache",
];

/// Compares the configs of `tag` built by us and by buildah.
fn compare_config(env: &Env, b: &Buildah, tag: &str) {
    assert_eq!(
        our_config(env, tag),
        b.config(tag),
        "{tag}: the config fields (left layerfs, right buildah)"
    );
}

/// Compares the trees and configs of `tag` built by us and by buildah;
/// `leftovers` are the paths buildah alone may have (what its RUN leaves).
fn compare(env: &Env, b: &Buildah, tag: &str, leftovers: &[&str]) {
    let m = env.mount(tag, &[]);
    let ours = untimed(&tree::listing(&m.path));
    drop(m);
    let theirs = b.listing(tag);
    let path = |l: &String| l.split('\t').next().unwrap_or_default().to_string();
    let meta = |l: &String| l.split('\t').take(4).collect::<Vec<_>>().join("\t");
    let only_theirs: Vec<&String> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    let only_ours: Vec<&String> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let mut unexplained = Vec::new();
    for l in &only_theirs {
        let p = path(l);
        let log_of_ours = LOGS.contains(&p.as_str())
            && only_ours.iter().any(|o| path(o) == p && meta(o) == meta(l));
        if !(p == "./etc/hosts" || leftovers.contains(&p.as_str()) || log_of_ours) {
            unexplained.push(format!("- {l}"));
        }
    }
    for l in &only_ours {
        if !LOGS.contains(&path(l).as_str()) {
            unexplained.push(format!("+ {l}"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "{tag}: layerfs (+) and buildah (-) differ:\n{}",
        unexplained.join("\n")
    );
    compare_config(env, b, tag);
    eprintln!(
        "{tag}: {} entries alike; buildah alone has {:?}",
        ours.len() - only_ours.len(),
        only_theirs.iter().map(|l| path(l)).collect::<Vec<_>>()
    );
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A store with debian:minbase, and buildah's with the same; None after a
/// loud skip.
fn setup(test: &str) -> Option<(Env, Buildah)> {
    if !have_tool("buildah", test) {
        return None;
    }
    // As Debian's image on a registry has it: a PATH, and a history entry
    // for its layer (buildah's ONBUILD child needs one per layer).
    let env = minbase_env(test, "debian:minbase", |c| {
        c.set_env("PATH", DEFAULT_PATH);
        c.history = vec![layerfs::oci::HistoryEntry {
            created_by: Some("debian bookworm minbase rootfs".into()),
            ..Default::default()
        }];
    })?;
    let b = Buildah::new(&env);
    Some((env, b))
}

const MULTI_STAGE: &str = r#"# A builder stage makes the app; the runtime stage gets only its output.
ARG BASE=debian:minbase
FROM ${BASE} AS builder
COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/hello_*.deb \
 && mkdir -p /out/bin \
 && cp /usr/bin/hello /out/bin/ \
 && hello -g "built in a stage" > /out/greeting.txt

FROM ${BASE} AS runtime
ARG VERSION=1.0
LABEL org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.title="hello app"
COPY --from=builder /out/ /opt/app/
RUN useradd --uid 1001 --create-home app \
 && mkdir /data && chown app:app /data
ENV APP_HOME=/opt/app \
    PATH=/opt/app/bin:/usr/local/bin:/usr/bin:/bin
WORKDIR /home/app
USER app
EXPOSE 8080/tcp 9090/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD ["hello", "--version"]
ENTRYPOINT ["hello"]
CMD ["-g", "hi"]
"#;

#[test]
fn parity_multi_stage_builder_and_runtime() {
    const T: &str = "parity_multi_stage_builder_and_runtime";
    let Some(debs) = debs(T) else { return };
    let Some((env, b)) = setup(T) else { return };
    let ctx = env.mkdir("ctx");
    for d in debs {
        write(
            &ctx,
            &format!("debs/{}", d.file_name().unwrap().to_string_lossy()),
            &std::fs::read(d).unwrap(),
        );
    }
    write(&ctx, "Dockerfile", MULTI_STAGE.as_bytes());
    let args = ["--build-arg", "VERSION=2.5"];
    let mut ours = vec!["build", "-t", "multi"];
    ours.extend_from_slice(&args);
    ours.push(ctx.to_str().unwrap());
    env.ok(&ours);
    b.bud("multi", &args, &ctx);
    compare(&env, &b, "multi", &[]);
    let out = env.ok(&["run", "--rm", "multi"]);
    assert_eq!(out, "hi\n");
}

const MOUNTS: &str = r#"# Caches, binds and scratch space that stay out of the image.
FROM debian:minbase
RUN --mount=type=cache,target=/var/cache/demo,id=demo \
    echo cached > /var/cache/demo/file && cp /var/cache/demo/file /cached.txt
RUN --mount=type=bind,source=src,target=/mnt/src \
    cp -r /mnt/src /copied && ls -l /mnt/src > /listing.txt
RUN --mount=type=tmpfs,target=/mnt/scratch \
    echo t > /mnt/scratch/x && ls /mnt/scratch > /tmpfs.txt
CMD ["cat", "/cached.txt"]
"#;

#[test]
fn parity_cache_bind_and_tmpfs_mounts() {
    const T: &str = "parity_cache_bind_and_tmpfs_mounts";
    let Some((env, b)) = setup(T) else { return };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", MOUNTS.as_bytes());
    write(&ctx, "src/main.c", b"int main(void) { return 0; }\n");
    write(&ctx, "src/lib/util.h", b"#define UTIL 1\n");
    env.ok(&["build", "-t", "mounts", ctx.to_str().unwrap()]);
    b.bud("mounts", &[], &ctx);
    compare(
        &env,
        &b,
        "mounts",
        &["./mnt/src", "./mnt/scratch", "./var/cache/demo"],
    );
}

const HEREDOCS: &str = r#"FROM debian:minbase
RUN <<EOF
set -e
mkdir -p /app/etc
echo "first line" > /app/notes.txt
echo "second line" >> /app/notes.txt
EOF
COPY <<EOF /app/etc/app.ini
[main]
name=demo
level=3
EOF
RUN <<EOT sh -e
cd /app
wc -l notes.txt > /app/count.txt
EOT
WORKDIR /app
CMD ["cat", "notes.txt"]
"#;

/// HEREDOCS as buildah 1.28 can read it.
const HEREDOCS_SPELLED: &str = r#"FROM debian:minbase
RUN set -e; mkdir -p /app/etc; echo "first line" > /app/notes.txt; echo "second line" >> /app/notes.txt
COPY app.ini /app/etc/app.ini
RUN sh -e -c 'cd /app; wc -l notes.txt > /app/count.txt'
WORKDIR /app
CMD ["cat", "notes.txt"]
"#;

#[test]
fn parity_heredocs() {
    const T: &str = "parity_heredocs";
    let Some((env, b)) = setup(T) else { return };
    let ours = env.mkdir("ctx");
    write(&ours, "Dockerfile", HEREDOCS.as_bytes());
    env.ok(&["build", "-t", "heredocs", ours.to_str().unwrap()]);
    let theirs = env.mkdir("ctx-spelled");
    write(&theirs, "Dockerfile", HEREDOCS_SPELLED.as_bytes());
    write(&theirs, "app.ini", b"[main]\nname=demo\nlevel=3\n");
    b.bud("heredocs", &[], &theirs);
    compare(&env, &b, "heredocs", &[]);
    assert_eq!(
        env.ok(&["run", "--rm", "heredocs"]),
        "first line\nsecond line\n"
    );
}

const ONBUILD_BASE: &str = r#"FROM debian:minbase
LABEL role=base
ONBUILD COPY app.txt /app/app.txt
ONBUILD RUN echo "built on the base" > /app/onbuild.txt
ONBUILD ENV FROM_BASE=yes
CMD ["sh"]
"#;

const ONBUILD_CHILD: &str = r#"FROM onbase
LABEL role=child
CMD ["cat", "/app/app.txt"]
"#;

#[test]
fn parity_onbuild_base_and_child() {
    const T: &str = "parity_onbuild_base_and_child";
    let Some((env, b)) = setup(T) else { return };
    let base = env.mkdir("base");
    write(&base, "Dockerfile", ONBUILD_BASE.as_bytes());
    let child = env.mkdir("child");
    write(&child, "Dockerfile", ONBUILD_CHILD.as_bytes());
    write(&child, "app.txt", b"the child's app\n");
    env.ok(&["build", "-t", "onbase", base.to_str().unwrap()]);
    env.ok(&["build", "-t", "onchild", child.to_str().unwrap()]);
    b.bud("onbase", &[], &base);
    b.bud("onchild", &[], &child);
    // The base's tree is not listed: `buildah from` would run its triggers.
    compare_config(&env, &b, "onbase");
    compare(&env, &b, "onchild", &[]);
    assert_eq!(env.ok(&["run", "--rm", "onchild"]), "the child's app\n");
}

const ARG_BEFORE_FROM: &str = r#"ARG DISTRO=debian
ARG FLAVOUR=minbase
ARG GREETING=hello
FROM ${DISTRO}:${FLAVOUR}
ARG GREETING
ARG UNSET
ENV GREETING=${GREETING} UNSET=${UNSET:-default}
RUN echo "$GREETING from ${FLAVOUR:-no flavour here}" > /greeting.txt
"#;

#[test]
fn parity_arg_before_from() {
    const T: &str = "parity_arg_before_from";
    let Some((env, b)) = setup(T) else { return };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", ARG_BEFORE_FROM.as_bytes());
    let args = ["--build-arg", "GREETING=hi"];
    let mut ours = vec!["build", "-t", "args"];
    ours.extend_from_slice(&args);
    ours.push(ctx.to_str().unwrap());
    env.ok(&ours);
    b.bud("args", &args, &ctx);
    compare(&env, &b, "args", &[]);
    assert_eq!(
        env.ok(&["run", "--rm", "args", "cat", "/greeting.txt"]),
        "hi from no flavour here\n"
    );
}

const SECRETS: &str = r#"FROM debian:minbase
RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /token.sum
RUN --mount=type=secret,id=token,target=/etc/token,mode=0440 stat -c %a /etc/token > /mode.txt
"#;

#[test]
fn parity_secrets() {
    const T: &str = "parity_secrets";
    let Some((env, b)) = setup(T) else { return };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", SECRETS.as_bytes());
    let secret = env.dir.path().join("token");
    std::fs::write(&secret, b"parity-secret-93e1").unwrap();
    let spec = format!("id=token,src={}", secret.display());
    env.ok(&[
        "build",
        "--secret",
        &spec,
        "-t",
        "secrets",
        ctx.to_str().unwrap(),
    ]);
    b.bud("secrets", &["--secret", &spec], &ctx);
    compare(&env, &b, "secrets", &["./run/secrets"]);
    assert_eq!(
        env.ok(&["run", "--rm", "secrets", "cat", "/mode.txt"]),
        "440\n"
    );
}
