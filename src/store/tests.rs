//! The store's modes: its private parts are reachable by its owner only.

use super::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_new_store_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new/store");
    let store = Store::open(&root).unwrap();
    let containers = store.own_dir_for("containers").unwrap();
    for p in [&root, &root.join("layerfs"), &containers] {
        assert_eq!(mode(p), 0o700, "{}", p.display());
    }
    assert_eq!(mode(&dir.path().join("new")), 0o700, "a parent it made");
}

#[test]
fn an_old_store_is_tightened_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    let own = root.join("layerfs");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
    Store::open(&root).unwrap();
    assert_eq!(mode(&own), 0o700);
    assert_eq!(
        mode(&root),
        0o755,
        "an existing root keeps its mode: other OCI tools may share it"
    );
}

#[test]
fn a_blob_written_in_pieces_past_the_writeback_step_is_stored_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 20 MiB in uneven pieces: some buffered, some written through, with
    // writeback started twice on the way.
    let data = crate::testutil::noise(20 << 20, 5);
    let mut w = store.blob_writer().unwrap();
    for piece in data.chunks(300_001) {
        w.write_all(piece).unwrap();
    }
    let (digest, size) = w.commit(Some(&crate::oci::Digest::of(&data))).unwrap();
    assert_eq!(size, data.len() as u64);
    assert!(std::fs::read(store.blob_path(&digest)).unwrap() == data);
}
