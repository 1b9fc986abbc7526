//! The fixture tier: every image of ../shared/fixtures that has an expected
//! listing (expected/NAME.tree.tsv, what `umoci unpack` made of it) is stored
//! the way a user would store it — `layerfs import`, `layerfs load`, or its
//! layer tars stacked — mounted, and its tree compared with the listing byte
//! for byte. Without the fixtures folder the test skips loudly (the fixtures
//! are an extra tier, so also under LAYERFS_CI=1).

use crate::support::{Env, can_mount, tree};
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

/// How one expected listing's image gets into the store.
enum Source {
    /// `layerfs import FILE` (a rootfs tarball or a bare layer).
    Import(String),
    /// An image of these layer tars, bottom first.
    Layers(&'static [&'static str]),
    /// `layerfs load -i PATH [--name REPO] [--platform P]`, then mount `image`.
    Load {
        path: &'static str,
        repo: Option<&'static str>,
        platform: Option<&'static str>,
        image: Image,
    },
}

enum Image {
    Named(&'static str),
    /// The archive names no image: the ID `load` printed.
    LoadedId,
}

fn load(path: &'static str, repo: Option<&'static str>, image: &'static str) -> Source {
    Source::Load {
        path,
        repo,
        platform: Some("linux/amd64"),
        image: Image::Named(image),
    }
}

/// Where expected/NAME.tree.tsv comes from (../interop/verify-fixtures.sh
/// made each listing from these same sources).
fn source_of(name: &str) -> Option<Source> {
    if let Some(arch) = name.strip_prefix("alpine-minirootfs-3.20.3-") {
        return Some(Source::Import(format!(
            "real/alpine/alpine-minirootfs-3.20.3-{arch}.tar.gz"
        )));
    }
    if let Some(tar) = name.strip_prefix("tar-edge-") {
        return Some(Source::Import(format!("real/tar-edge/{tar}.tar")));
    }
    const SHARED: &str = "synthetic/shared-base.oci";
    Some(match name {
        "ggcr-content.tar.zst" => Source::Import("real/ggcr/content.tar.zst".into()),
        "regclient-layer" => Source::Import("real/regclient/layer.tar".into()),
        "regclient-layer-wh" => Source::Import("real/regclient/layer-wh.tar".into()),
        "regclient-layer+layer-wh" => {
            Source::Layers(&["real/regclient/layer.tar", "real/regclient/layer-wh.tar"])
        }
        "synthetic-base" => load(SHARED, Some("lfs"), "lfs:base"),
        "synthetic-app-a" => load(SHARED, Some("lfs"), "lfs:app-a"),
        "synthetic-app-b" => load(SHARED, Some("lfs"), "lfs:app-b"),
        "synthetic-app-b-docker-archive" => load(
            "synthetic/app-b.docker.tar",
            None,
            "lfs-fixtures/app-b:latest",
        ),
        "synthetic-app-b-oci-archive" => {
            load("synthetic/app-b.oci-archive.tar", Some("lfs"), "lfs:app-b")
        }
        "synthetic-app-b-zstd" => load("synthetic/app-b-zstd.oci", Some("lfs"), "lfs:app-b"),
        "synthetic-mixed-compression" => {
            load("synthetic/mixed-compression.oci", Some("lfs"), "lfs:app-b")
        }
        // The multi-platform index tag, so the mount picks the platform.
        "busybox-1.38.0-musl-amd64" if std::env::consts::ARCH == "x86_64" => load(
            "real/busybox/busybox-1.38.0-musl.oci",
            Some("busybox"),
            "busybox:1.38.0-musl",
        ),
        "busybox-1.38.0-musl-amd64" => load(
            "real/busybox/busybox-1.38.0-musl.oci",
            Some("busybox"),
            "busybox:1.38.0-musl-amd64",
        ),
        "busybox-1.38.0-musl-arm64" => Source::Load {
            path: "real/busybox/busybox-1.38.0-musl.oci",
            repo: Some("busybox"),
            platform: Some("linux/arm64/v8"),
            image: Image::Named("busybox:1.38.0-musl-arm64v8"),
        },
        "ggcr-whiteout_image" => load(
            "real/ggcr/whiteout_image.tar",
            None,
            "bazel/pkg/v1/mutate:whiteout_image",
        ),
        "ggcr-whiteout_dir" => load(
            "real/ggcr/whiteout_dir.tar",
            None,
            "localhost:5000/whiteout:latest",
        ),
        "ggcr-overwritten_file" => load(
            "real/ggcr/overwritten_file.tar",
            None,
            "bazel/pkg/v1/mutate:overwritten_file",
        ),
        "ggcr-hello-world-v25" => Source::Load {
            path: "real/ggcr/hello-world-v25.tar",
            repo: None,
            platform: Some("linux/arm64"),
            image: Image::LoadedId,
        },
        // The archives' images in manifest.json order (@0, @1).
        "ggcr-test_bundle-0" => load("real/ggcr/test_bundle.tar", None, "test_image_2:latest"),
        "ggcr-test_bundle-1" => load("real/ggcr/test_bundle.tar", None, "test_image_1:latest"),
        "ggcr-test_link-0" => load(
            "real/ggcr/test_link.tar",
            None,
            "bazel/v1/tarball:test_image_1",
        ),
        "ggcr-test_link-1" => load(
            "real/ggcr/test_link.tar",
            None,
            "bazel/v1/tarball:test_image_3",
        ),
        _ => return None,
    })
}

/// Stores the image of `src` in `env`; returns what to mount.
fn store(env: &Env, fixtures: &Path, src: &Source) -> Result<String, String> {
    let run = |args: &[&str]| -> Result<String, String> {
        let out = env.run(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "layerfs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    match src {
        Source::Import(rel) => {
            let path = fixtures.join(rel);
            run(&["import", path.to_str().unwrap(), "fx:1"])?;
            Ok("fx:1".into())
        }
        Source::Layers(rels) => {
            let paths: Vec<PathBuf> = rels.iter().map(|r| fixtures.join(r)).collect();
            env.image_files("fx:1", &paths);
            Ok("fx:1".into())
        }
        Source::Load {
            path,
            repo,
            platform,
            image,
        } => {
            let path = fixtures.join(path);
            let mut args = vec!["load", "-i", path.to_str().unwrap()];
            if let Some(r) = repo {
                args.extend(["--name", r]);
            }
            if let Some(p) = platform {
                args.extend(["--platform", p]);
            }
            let out = run(&args)?;
            match image {
                Image::Named(n) => Ok(n.to_string()),
                Image::LoadedId => out
                    .lines()
                    .find_map(|l| l.strip_prefix("Loaded image ID: "))
                    .map(|id| id.trim().to_string())
                    .ok_or_else(|| format!("layerfs load printed no image ID: {out}")),
            }
        }
    }
}

#[test]
fn every_fixture_mounts_as_umoci_unpacks_it() {
    const T: &str = "every_fixture_mounts_as_umoci_unpacks_it";
    let fixtures = PathBuf::from(FIXTURES);
    if !fixtures.join("expected").is_dir() {
        eprintln!(
            "\n*** SKIPPED {T}: fixtures not found at {} ***\n",
            fixtures.display()
        );
        return;
    }
    if !can_mount(T) {
        return;
    }
    let mut expected: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures.join("expected"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".tree.tsv")?
                .to_string();
            Some((name, p))
        })
        .collect();
    expected.sort();
    assert!(
        expected.len() >= 30,
        "only {} expected listings",
        expected.len()
    );

    let mut failures = Vec::new();
    for (name, tsv) in &expected {
        let Some(src) = source_of(name) else {
            failures.push(format!(
                "{name}: no source known for expected/{name}.tree.tsv"
            ));
            continue;
        };
        let env = Env::new();
        let image = match store(&env, &fixtures, &src) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let m = env.mount(&image, &[]);
        let got = tree::listing(&m.path);
        drop(m);
        let want = std::fs::read_to_string(tsv).unwrap();
        if got == want {
            eprintln!("fixture {name}: {} entries match", want.lines().count());
        } else {
            failures.push(format!(
                "{name} (mounted {image}): the mount differs from expected/{name}.tree.tsv \
                 ('-' expected only, '+' mount only):\n{}",
                tree::diff(&want, &got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail:\n\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n\n")
    );
}
