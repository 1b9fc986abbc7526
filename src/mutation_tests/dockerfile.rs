//! Dockerfiles and `.dockerignore` files, as a build context brings them.

use crate::fuzzing::dockerfile;
use crate::testutil::mutate::{count, run};

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
# escape=\
ARG BASE=debian:12
FROM ${BASE:-scratch} AS build
ENV A=1 B="two words" C=${A:+set}
ARG V=1.2.3
LABEL org.opencontainers.image.version=$V "k 2"=v
WORKDIR /src/${V}
COPY --chown=1000:1000 --chmod=0644 a.txt b/ /dst/
ADD https://example.com/x.tar.gz /opt/
RUN set -e; \
    echo "${A}" > /a \
 && echo 'single $A' \
    # a comment inside a continuation
    && true
RUN ["/bin/sh", "-c", "echo \"json form\""]
USER 1000:1000
EXPOSE 80/tcp 443
VOLUME ["/data", "/cache"]
ENTRYPOINT ["/bin/app"]
CMD ["--flag", "${NOT_EXPANDED}"]
STOPSIGNAL SIGTERM
HEALTHCHECK NONE
ONBUILD RUN x
"#;

const BACKTICK: &str =
    "# escape=`\nFROM base:1\nRUN dir c:\\ `\n  && echo ${X:-`${Y}`}\nCOPY [\"a b\", \"c\"]\n";

const IGNORE: &str = "# comment\n*.log\n!keep.log\n**/node_modules\n/build/\n.git\n[a-c]?.tmp\n\\!literal\n../outside\n";

pub(super) fn seeds() -> Vec<Vec<u8>> {
    [DOCKERFILE, BACKTICK, IGNORE]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

#[test]
fn mutated_dockerfiles_and_ignore_files() {
    run(
        "Dockerfile, .dockerignore",
        seeds(),
        count(5000),
        dockerfile,
    );
}
