//! `layerfs build` of BuildKit-style Dockerfiles on Debian minbase, with
//! RUN: a multi-stage builder + runtime with heredocs and ARG before FROM,
//! `--target`, and an ONBUILD base whose triggers run in a child build.

use crate::support::containers::minbase_env;
use std::path::Path;

fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=debian:minbase
FROM ${BASE} AS builder
ARG BASE
WORKDIR /src
COPY src/ ./
RUN <<EOF
set -e
mkdir -p /out
tr a-z A-Z < hello.txt > /out/HELLO
echo "built from $BASE" > /out/from
EOF
RUN <<-'EOT' bash
	set -eu
	[[ -f /out/HELLO ]] && echo bash-ran > /out/bash
	EOT

FROM debian:minbase AS unused
RUN touch /unused-ran && exit 1

FROM debian:minbase AS assets
COPY assets/ /assets/
RUN ls /assets > /assets.list

FROM $BASE
ARG BASE
COPY --from=builder /out/ /app/
COPY --from=builder --chmod=0700 /out/HELLO /app/private
RUN <<ONE cat > /app/one && <<"TWO" cat > /app/two
first $BASE
ONE
second $BASE
TWO
COPY <<EOF /app/motd
hello from $BASE
EOF
RUN <<EOF
#!/bin/bash
[ -n "$BASH_VERSION" ] && echo "run by bash" > /app/shebang
EOF
COPY --from=assets /assets.list /app/
HEALTHCHECK --interval=5s --retries=2 CMD test -f /app/HELLO
STOPSIGNAL SIGINT
VOLUME /data
CMD ["cat", "/app/HELLO"]
"#;

#[test]
fn a_multi_stage_build_with_heredocs_builds_what_its_target_needs() {
    const T: &str = "a_multi_stage_build_with_heredocs_builds_what_its_target_needs";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let ctx = env.mkdir("ctx");
    write(&ctx, "Dockerfile", MULTI);
    write(&ctx, "src/hello.txt", "hello from layerfs\n");
    write(&ctx, "assets/a.css", "a\n");
    let ctx_s = ctx.to_str().unwrap();
    let started = std::time::Instant::now();
    let first = env.ok(&["build", "-t", "app:1", ctx_s]);
    let t_first = started.elapsed();
    assert!(
        !first.contains("unused-ran"),
        "an unneeded stage ran: {first}"
    );
    assert_eq!(env.ok(&["run", "--rm", "app:1"]), "HELLO FROM LAYERFS\n");
    let cat = |p: &str| env.ok(&["run", "--rm", "app:1", "cat", p]);
    assert_eq!(cat("/app/from"), "built from debian:minbase\n");
    assert_eq!(
        cat("/app/bash"),
        "bash-ran\n",
        "<<- with a quoted name, run by bash"
    );
    assert_eq!(
        cat("/app/one"),
        "first debian:minbase\n",
        "the shell expands <<ONE"
    );
    assert_eq!(cat("/app/two"), "second $BASE\n", "and not <<\"TWO\"");
    assert_eq!(cat("/app/motd"), "hello from debian:minbase\n");
    assert_eq!(cat("/app/shebang"), "run by bash\n");
    assert_eq!(cat("/app/assets.list"), "a.css\n");
    let ls = env.ok(&["run", "--rm", "app:1", "ls", "-ln", "/app/private"]);
    assert!(ls.starts_with("-rwx------ 1 0 0 19 "), "{ls}");
    let code = env
        .run(&["run", "--rm", "app:1", "test", "-e", "/src/hello.txt"])
        .status
        .code();
    assert_eq!(code, Some(1), "the builder's tree stays in the builder");

    let img = env.store.resolve("app:1").unwrap();
    let cc = img.config.config.clone().unwrap();
    let hc = cc.healthcheck.unwrap();
    assert_eq!(hc.test, ["CMD-SHELL", "test -f /app/HELLO"]);
    assert_eq!((hc.interval, hc.retries), (5_000_000_000, 2));
    assert_eq!(cc.stop_signal.as_deref(), Some("SIGINT"));
    assert!(cc.volumes.unwrap().contains_key("/data"));
    let created: Vec<String> = img
        .config
        .history
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        created.contains(
            &"RUN <<EOF\n#!/bin/bash\n[ -n \"$BASH_VERSION\" ] && echo \"run by bash\" > /app/shebang\nEOF\n"
                .to_string()
        ),
        "a heredoc RUN's history is the instruction as written: {created:#?}"
    );
    let history = env.ok(&["history", "--no-trunc", "app:1"]);
    assert!(
        history.contains("COPY --from=builder /out/ /app/"),
        "{history}"
    );

    // Unchanged: every step comes from the cache.
    let started = std::time::Instant::now();
    let again = env.ok(&["build", "-t", "app:1", ctx_s]);
    let t_again = started.elapsed();
    assert_eq!(
        again.matches("--> Using cache").count(),
        16,
        "4 steps of builder, 2 of assets, 10 of the final stage (ARG, FROM are not cached steps): {again}"
    );
    assert!(!again.contains("unused-ran"));
    // A changed asset rebuilds stage assets, and the final stage from its
    // COPY --from=assets on; the builder's RUNs are not run again.
    write(&ctx, "assets/b.css", "b\n");
    let started = std::time::Instant::now();
    let changed = env.ok(&["build", "-t", "app:1", ctx_s]);
    let t_changed = started.elapsed();
    eprintln!(
        "multi-stage build times: first {t_first:.2?}, unchanged {t_again:.2?}, \
         one asset changed {t_changed:.2?}"
    );
    let cached: Vec<&str> = changed
        .split("STEP ")
        .filter(|s| s.contains("--> Using cache"))
        .map(|s| s.lines().next().unwrap_or_default())
        .map(|l| l.split_once(": ").map_or(l, |(_, t)| t))
        .collect();
    assert_eq!(
        cached,
        [
            "WORKDIR /src",
            "COPY src/ ./",
            "RUN <<EOF",
            "RUN <<-'EOT' bash",
            "COPY --from=builder /out/ /app/",
            "COPY --from=builder --chmod=0700 /out/HELLO /app/private",
            "RUN <<ONE cat > /app/one && <<\"TWO\" cat > /app/two",
            "COPY <<EOF /app/motd",
            "RUN <<EOF",
        ],
        "{changed}"
    );
    assert_eq!(cat("/app/assets.list"), "a.css\nb.css\n");
    // --target builder builds that stage alone.
    let builder = env.ok(&["build", "--target", "builder", "-t", "app:builder", ctx_s]);
    assert!(!builder.contains("/app/motd"), "{builder}");
    let out = env.ok(&[
        "run",
        "--rm",
        "app:builder",
        "cat",
        "/out/HELLO",
        "/src/hello.txt",
    ]);
    assert_eq!(out, "HELLO FROM LAYERFS\nhello from layerfs\n");
}

#[test]
fn onbuild_triggers_run_when_the_image_is_a_base() {
    const T: &str = "onbuild_triggers_run_when_the_image_is_a_base";
    let Some(env) = minbase_env(T, "debian:minbase", |_| {}) else {
        return;
    };
    let base = env.mkdir("base");
    write(
        &base,
        "Dockerfile",
        "FROM debian:minbase\n\
         ONBUILD COPY . /app/src\n\
         ONBUILD RUN wc -l < /app/src/list > /app/count\n\
         LABEL kind=base\n",
    );
    env.ok(&["build", "-t", "obbase:1", base.to_str().unwrap()]);
    let cc = env
        .store
        .resolve("obbase:1")
        .unwrap()
        .config
        .config
        .unwrap();
    assert_eq!(
        cc.on_build.unwrap(),
        ["COPY . /app/src", "RUN wc -l < /app/src/list > /app/count"]
    );
    let code = env
        .run(&["run", "--rm", "obbase:1", "test", "-e", "/app"])
        .status
        .code();
    assert_eq!(code, Some(1), "the triggers did not run in the base");

    let child = env.mkdir("child");
    write(
        &child,
        "Dockerfile",
        "FROM obbase:1\nCMD [\"cat\", \"/app/count\"]\n",
    );
    write(&child, "list", "a\nb\nc\n");
    let out = env.ok(&["build", "-t", "obchild:1", child.to_str().unwrap()]);
    assert!(out.contains("running ONBUILD trigger: RUN wc -l"), "{out}");
    assert_eq!(env.ok(&["run", "--rm", "obchild:1"]), "3\n");
    let cc = env
        .store
        .resolve("obchild:1")
        .unwrap()
        .config
        .config
        .unwrap();
    assert_eq!(cc.on_build, None, "a child does not pass the triggers on");
    assert_eq!(cc.labels.unwrap()["kind"], "base");
    // A grandchild runs none of the base's triggers.
    let grand = env.mkdir("grand");
    write(
        &grand,
        "Dockerfile",
        "FROM obchild:1\nLABEL kind=grandchild\n",
    );
    let out = env.ok(&["build", "-t", "obgrand:1", grand.to_str().unwrap()]);
    assert!(!out.contains("ONBUILD"), "{out}");
}
