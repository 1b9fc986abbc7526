//! The everyday commands as a Docker user types them: `images` (sizes,
//! order, filters, patterns), `--format` templates, container IDs, `inspect`
//! of several names, `export` to a pipe, `diff` next to `podman diff`,
//! `df` against `gc`, the prune commands, `info` and `version`.

use crate::support::{Env, Tar, gzip, sh};
use layerfs::image::{layer_descriptor, new_config, write_image};
use layerfs::layer::ingest;
use layerfs::oci::Reference;
use std::collections::BTreeMap;
use std::process::Command;

/// Stores an image of one layer `tar` as `name`, created at `secs` (Unix
/// time), with `labels`.
fn image_at(env: &Env, name: &str, tar: &[u8], secs: i64, labels: &[(&str, &str)]) {
    let info = ingest(&env.store, tar, None).expect("ingest");
    let mut config = new_config();
    config.created = Some(layerfs::oci::time::format_rfc3339(secs));
    config.rootfs.diff_ids = vec![info.diff_id];
    let mut cc = config.config.take().unwrap_or_default();
    cc.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    config.config = Some(cc);
    let tag = Reference::parse(name).expect("name");
    write_image(&env.store, &config, &[layer_descriptor(&info)], Some(&tag)).expect("write");
}

/// Takes `name` away and lists its image unnamed, as a re-used tag leaves it.
fn make_dangling(env: &Env, name: &str) {
    let desc = env.store.untag(name).expect("untag");
    env.store.add_untagged(&desc).expect("add untagged");
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn images_lists_uncompressed_sizes_newest_first_and_filters_as_docker() {
    let env = Env::new();
    let big = Tar::new().big("data", 3 << 20, 7).finish();
    // The same tree gzip-compressed and plain: one uncompressed size.
    image_at(
        &env,
        "alpine:3.20",
        &gzip(&big),
        1_700_000_300,
        &[("tier", "base")],
    );
    image_at(&env, "apple:1", &big, 1_700_000_200, &[]);
    let small = Tar::new().file("x", 0o644, b"x").finish();
    image_at(
        &env,
        "localhost:5000/me/app:2",
        &small,
        1_700_000_100,
        &[("tier", "app")],
    );
    // 3 MiB of data and its tar headers: 3,147,264 bytes, gzip or not.
    assert_eq!((big.len(), small.len()), (3_147_264, 2048));
    let want_size = "3.15MB";
    let got = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]);
    assert_eq!(
        lines(&got),
        [
            format!("alpine:3.20 {want_size}"),
            format!("apple:1 {want_size}"),
            "localhost:5000/me/app:2 2.05kB".to_string(),
        ],
        "newest first, uncompressed sizes"
    );
    let names = |args: &[&str]| {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        env.ok(&a).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&["ap*"]),
        ["apple:1"],
        "a pattern matches as Docker's"
    );
    assert_eq!(names(&["al*"]), ["alpine:3.20"]);
    assert_eq!(names(&["alpine:3.20"]), ["alpine:3.20"]);
    assert_eq!(names(&["alpine:3.19"]), Vec::<String>::new());
    assert_eq!(names(&["localhost:5000/me/*"]), ["localhost:5000/me/app:2"]);
    assert_eq!(names(&["-f", "reference=a*"]), ["alpine:3.20", "apple:1"]);
    assert_eq!(
        names(&["-f", "label=tier"]),
        ["alpine:3.20", "localhost:5000/me/app:2"]
    );
    assert_eq!(
        names(&["-f", "label=tier=app"]),
        ["localhost:5000/me/app:2"]
    );
    assert_eq!(
        names(&["-f", "before=apple:1"]),
        ["localhost:5000/me/app:2"]
    );
    assert_eq!(names(&["-f", "since=apple:1"]), ["alpine:3.20"]);
    assert_eq!(names(&["-f", "dangling=true"]), Vec::<String>::new());
    assert_eq!(names(&["-f", "dangling=false"]).len(), 3);
    // An image that lost its name: dangling.
    image_at(
        &env,
        "plum:1",
        &Tar::new().file("y", 0o644, b"y").finish(),
        1_700_000_400,
        &[],
    );
    make_dangling(&env, "plum:1");
    env.ok(&["tag", "apple:1", "pear:1"]);
    let dangling = env.ok(&[
        "images",
        "-f",
        "dangling=true",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(lines(&dangling), ["<none>:<none>"], "{dangling}");
    // -a adds the build cache's intermediate images, which no name lists.
    let step = write_image(
        &env.store,
        &new_config(),
        &[layer_descriptor(
            &ingest(&env.store, &small[..], None).unwrap(),
        )],
        None,
    )
    .unwrap();
    env.store
        .remove_image_entries(&step.manifest.digest)
        .unwrap();
    env.store
        .add_hold(&layerfs::store::Hold {
            id: layerfs::image::BUILD_CACHE_HOLD.into(),
            manifests: vec![step.manifest.digest],
            what: "the build cache".into(),
            pid: None,
        })
        .unwrap();
    let short = &step.id.hex()[..12];
    assert!(!env.ok(&["images", "-q"]).contains(short));
    assert!(env.ok(&["images", "-a", "-q"]).contains(short));
    // -q, table templates, json.
    let ids = env.ok(&["images", "-q"]);
    assert!(ids.lines().all(|l| l.len() == 12), "{ids}");
    let table = env.ok(&[
        "images",
        "--format",
        "table {{.Repository}}\\t{{.ID}}",
        "pear",
    ]);
    let t: Vec<&str> = table.lines().collect();
    assert_eq!(t.len(), 2, "{table}");
    assert!(
        t[0].starts_with("REPOSITORY") && t[0].contains("IMAGE ID"),
        "{table}"
    );
    assert!(t[1].starts_with("pear "), "{table}");
    let json = env.ok(&["images", "--format", "{{json .}}", "pear"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert_eq!(v["Repository"], "pear");
    assert_eq!(v["Size"], want_size);
    // A bad template or filter: one line, Docker's exit codes.
    let out = env.run(&["images", "--format", "{{.Nope}}"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1);
    let out = env.run(&["images", "-f", "color=red"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_image_keeps_its_size_through_save_and_load_into_another_store() {
    let env = Env::new();
    let tar = gzip(
        &Tar::new()
            .big("data", 2 << 20, 3)
            .file("etc/a", 0o644, b"a")
            .finish(),
    );
    image_at(&env, "app:1", &tar, 1_700_000_000, &[]);
    let size = |e: &Env| e.ok(&["images", "--format", "{{.Size}}", "app:1"]);
    let history_total = |e: &Env| e.ok(&["history", "--format", "{{.Size}}", "app:1"]);
    let before = size(&env);
    assert_eq!(before, history_total(&env), "images and history agree");
    // docker-archive holds the layers uncompressed.
    let archive = env.dir.path().join("app.tar");
    env.ok(&["save", "app:1", "-o", archive.to_str().unwrap()]);
    let other = Env::new();
    other.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(size(&other), before);
    let inspect = other.ok(&["inspect", "-f", "{{.Size}}", "app:1"]);
    let layers = env.store.resolve("app:1").unwrap().manifest.layers;
    let index = layerfs::layer::LayerIndex::open(
        &env.store.layer_index_path(&layers[0].digest),
        &layers[0].digest,
    )
    .unwrap();
    assert_eq!(inspect.trim(), index.meta().uncompressed_size.to_string());
}

#[test]
fn containers_have_ids_and_commands_take_a_name_or_an_id() {
    if !crate::support::can_mount("containers_have_ids_and_commands_take_a_name_or_an_id") {
        return;
    }
    let env = Env::new();
    image_at(
        &env,
        "base:1",
        &Tar::new().file("etc/a", 0o644, b"a\n").finish(),
        1_700_000_000,
        &[],
    );
    for name in ["one", "two"] {
        let m = env.mount("base:1", &["--writable", "--name", name]);
        std::fs::write(m.join(&format!("etc/{name}")), name).unwrap();
        m.unmount();
    }
    let ids = env.ok(&["ps", "-aq"]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.iter()
            .all(|i| i.len() == 12 && i.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    let full = env.ok(&["ps", "-q", "--no-trunc"]);
    assert!(full.lines().all(|l| l.len() == 64), "{full}");
    // Newest first.
    assert_eq!(
        lines(&env.ok(&["ps", "--format", "{{.Names}} {{.ID}}"])),
        [format!("two {}", ids[0]), format!("one {}", ids[1])]
    );
    // diff, inspect, export, mount --container by ID.
    assert_eq!(env.ok(&["diff", ids[1]]), "C /etc\nA /etc/one\n");
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Name}} {{.State.Status}}", ids[0]]),
        "two created\n"
    );
    let m = env.mount_container(ids[1]);
    assert_eq!(std::fs::read(m.join("etc/one")).unwrap(), b"one");
    assert!(
        env.ok(&["ps", "--format", "{{.Names}} {{.State}}"])
            .contains("one mounted")
    );
    m.unmount();
    let (ok, listing, err) = sh(&format!(
        "{} --root {} export {} | tar -t",
        env!("CARGO_BIN_EXE_layerfs"),
        env.root().display(),
        ids[0]
    ));
    assert!(ok, "{err}");
    assert!(listing.lines().any(|l| l == "etc/two"), "{listing}");
    // inspect of several: what it found, an error line per missing one, exit 1.
    let out = env.run(&["inspect", "one", "no-such", "base:1"]);
    assert_eq!(out.status.code(), Some(1));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(found.as_array().map(Vec::len), Some(2));
    assert_eq!(found[0]["Name"], "one");
    assert!(found[1]["RepoTags"][0] == "base:1", "{found}");
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such"));
    // rm $(ps -aq)
    let mut args = vec!["rm"];
    args.extend(ids.iter().copied());
    env.ok(&args);
    assert_eq!(env.ok(&["ps", "-aq"]), "");
}

#[test]
fn diff_lists_what_podman_diff_lists_for_the_same_changes() {
    const T: &str = "diff_lists_what_podman_diff_lists_for_the_same_changes";
    if !crate::support::can_mount(T) {
        return;
    }
    if !sh("command -v podman").0 {
        assert!(
            std::env::var_os("LAYERFS_CI").is_none(),
            "{T}: podman is not installed"
        );
        eprintln!("SKIPPED {T}: podman is not installed");
        return;
    }
    let env = Env::new();
    let tar = Tar::new()
        .file("etc/a", 0o644, b"a\n")
        .file("etc/gone", 0o644, b"g\n")
        .file("olddir/sub/f", 0o644, b"o\n")
        .file("usr/bin/tool", 0o755, b"t\n")
        .file("keep/k", 0o644, b"k\n")
        .file("opq/o1", 0o644, b"o\n")
        .file("opq/o2", 0o644, b"o\n")
        .file("mvdir/sub/f", 0o644, b"m\n")
        .file("mvdir/g", 0o644, b"m\n")
        .finish();
    let tar_path = env.dir.path().join("image.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    env.ok(&["import", tar_path.to_str().unwrap(), "rich:1"]);
    let changes = "set -e
        echo more >> etc/a
        echo new > etc/b
        rm etc/gone
        mkdir -p newdir/sub && echo x > newdir/sub/f
        rm -r olddir
        chmod 700 keep
        ln -s /etc/a usr/bin/link
        mv usr/bin/tool usr/bin/tool2
        rm -r opq && mkdir opq && echo z > opq/z && echo o > opq/o2
        mv mvdir moved && echo h > moved/h && rm moved/g";
    let m = env.mount("rich:1", &["--writable", "--name", "c"]);
    let (ok, _, err) = sh(&format!("cd {} && {changes}", m.path.display()));
    assert!(ok, "{err}");
    m.unmount();
    let ours = env.ok(&["diff", "c"]);

    let dir = env.mkdir("podman");
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            // Podman's default tmpdir (/run/libpod) is shared with the other
            // tests' podman runs; this one keeps its state apart.
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .args(args)
            .output()
            .expect("podman");
        assert!(out.status.success(), "podman {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podman(&["import", tar_path.to_str().unwrap(), "rich:1"]);
    // `podman diff NAME` takes an image first, and a name of hex digits
    // ("c") is a prefix of one image ID in 16: it then listed the image's
    // own layer, all "A". A container diff of a name no ID starts with.
    let name = "diffed";
    podman(&["create", "--name", name, "rich:1", "true"]);
    let root = podman(&["mount", name]);
    let (ok, _, err) = sh(&format!("cd {} && {changes}", root.trim()));
    assert!(ok, "{err}");
    podman(&["umount", name]);
    let mut theirs: Vec<String> = podman(&["container", "diff", name])
        .lines()
        .map(str::to_string)
        .collect();
    theirs.sort_by(|a, b| a[2..].cmp(&b[2..]));
    podman(&["rm", "-a", "-f"]);
    podman(&["rmi", "-a", "-f"]);
    assert_eq!(
        ours.lines().collect::<Vec<_>>(),
        theirs,
        "layerfs vs podman diff"
    );
    assert!(
        ours.contains("D /olddir\n") && ours.contains("A /newdir/sub/f\n"),
        "{ours}"
    );
}

/// The bytes of a `df --format json` field.
fn df_field(env: &Env, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["df", "--format", "json"])).unwrap();
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("df json has no {key}: {v}"))
}

#[test]
fn what_df_calls_reclaimable_is_what_gc_frees() {
    if !crate::support::can_mount("what_df_calls_reclaimable_is_what_gc_frees") {
        return;
    }
    let env = Env::new();
    let layer = |n: u64| Tar::new().big("data", 300_000 + n * 1000, n).finish();
    image_at(&env, "keep:1", &layer(1), 1_700_000_000, &[]);
    image_at(&env, "held:1", &layer(2), 1_700_000_000, &[]);
    image_at(&env, "gone:1", &layer(3), 1_700_000_000, &[]);
    // A container keeps its image from gc after rmi.
    let m = env.mount("held:1", &["--writable", "--name", "c"]);
    m.unmount();
    env.ok(&["rmi", "-f", "held:1"]);
    env.store.untag("gone:1").expect("untag");
    // A temp file an interrupted writer left.
    std::fs::write(env.root().join("layerfs/tmp/left-over"), vec![0u8; 4321]).unwrap();
    let table = env.ok(&["df"]);
    let reclaimable = df_field(&env, "Reclaimable");
    let blobs_before = df_field(&env, "BlobsTotal");
    let gc = env.ok(&["gc"]);
    let blobs_after = df_field(&env, "BlobsTotal");
    assert_eq!(
        reclaimable,
        blobs_before - blobs_after + 4321,
        "df said {reclaimable}; gc: {gc}"
    );
    let said = table
        .lines()
        .find_map(|l| l.strip_prefix("Reclaimable by gc: "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        gc.trim_end().ends_with(&format!("freed {said}")),
        "df: {said}; gc: {gc}"
    );
    assert_eq!(df_field(&env, "Reclaimable"), 0, "nothing left to free");
    env.ok(&["rm", "c"]);
    assert!(
        df_field(&env, "Reclaimable") > 0,
        "the container's image is free now"
    );
}

#[test]
fn prune_removes_what_nothing_uses_and_system_df_shows_it() {
    if !crate::support::can_mount("prune_removes_what_nothing_uses_and_system_df_shows_it") {
        return;
    }
    let env = Env::new();
    // Noise seeds differ in more than their lowest bit.
    let layer = |n: u64| Tar::new().big("data", 200_000, n * 16).finish();
    image_at(&env, "used:1", &layer(1), 1_700_000_000, &[]);
    image_at(&env, "unused:1", &layer(2), 1_700_000_000, &[]);
    image_at(&env, "dangling:1", &layer(3), 1_700_000_000, &[]);
    make_dangling(&env, "dangling:1");
    let m = env.mount("used:1", &["--writable", "--name", "live"]);
    let stopped = env.mount("used:1", &["--writable", "--name", "stopped"]);
    std::fs::write(stopped.join("f"), vec![1u8; 5000]).unwrap();
    stopped.unmount();

    let sdf = env.ok(&["system", "df"]);
    let row = |kind: &str| -> Vec<String> {
        sdf.lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("{sdf}"))[kind.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("Images")[..2], ["3", "1"], "{sdf}");
    assert_eq!(row("Containers")[..2], ["2", "1"], "{sdf}");
    assert!(sdf.contains("Build Cache"), "{sdf}");

    // Without -f, a "no" keeps everything.
    let mut child = env
        .cmd(&["container", "prune"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Are you sure"));
    assert_eq!(env.ok(&["ps", "-q"]).lines().count(), 2);

    let out = env.ok(&["container", "prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert_eq!(
        lines(&env.ok(&["ps", "--format", "{{.Names}}"])),
        ["live"],
        "the mounted container stays"
    );
    let out = env.ok(&["image", "prune", "-f"]);
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert_eq!(
        env.ok(&["images", "-q"]).lines().count(),
        2,
        "only the dangling one went"
    );
    let out = env.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: unused:1"), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert_eq!(
        lines(&env.ok(&["images", "--format", "{{.Repository}}"])),
        ["used"],
        "the image a container uses stays"
    );
    drop(m);
    assert!(env.run(&["fsck"]).status.success());
}

#[test]
fn info_and_version_tell_the_store_and_the_driver() {
    let env = Env::new();
    image_at(
        &env,
        "a:1",
        &Tar::new().file("a", 0o644, b"a").finish(),
        1_700_000_000,
        &[],
    );
    let info = env.ok(&["info"]);
    assert!(
        info.contains(&format!("Store root: {}", env.root().display())),
        "{info}"
    );
    assert!(info.contains("Images: 1"), "{info}");
    assert!(info.contains("Containers: 0"), "{info}");
    assert!(info.contains("FUSE version: "), "{info}");
    assert!(info.contains("Kernel passthrough: o"), "{info}");
    assert!(info.contains("Runtime: "), "{info}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["system", "info", "--format", "json"])).unwrap();
    assert_eq!(v["Images"], 1);
    assert_eq!(env.ok(&["info", "-f", "{{.Containers}}"]), "0\n");
    let version = env.ok(&["version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
