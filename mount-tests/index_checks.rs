//! A layer index's inflate windows are checked when a read uses them, not
//! when the mount opens the index: damage there fails those reads (EIO),
//! never gives wrong bytes, and `fsck` rebuilds the index.

use crate::support::{Env, Tar, can_mount, gzip};

/// The byte range of the windows section of index file `bytes`: before the
/// blob spans (48 bytes each) and the window sums (32 per 16 KiB), which
/// end the file; its length is in the header at 144, the span count at 184.
fn windows(bytes: &[u8]) -> std::ops::Range<usize> {
    let len = u64::from_le_bytes(bytes[144..152].try_into().unwrap()) as usize;
    let spans = u32::from_le_bytes(bytes[184..188].try_into().unwrap()) as usize;
    let end = bytes.len() - spans * 48 - len.div_ceil(16 << 10) * 32;
    end - len..end
}

#[test]
fn a_damaged_index_window_fails_reads_after_mount_and_fsck_mends_it() {
    if !can_mount("a_damaged_index_window_fails_reads_after_mount_and_fsck_mends_it") {
        return;
    }
    let env = Env::new();
    let big = crate::support::Noise::bytes(9, 12 << 20);
    let layer = gzip(
        &Tar::new()
            .file("small", 0o644, b"small file")
            .file("big", 0o644, &big)
            .finish(),
    );
    let info = env.image("win:1", &[layer]);
    let idx = env.store.layer_index_path(&info[0].digest);
    let mut bytes = std::fs::read(&idx).unwrap();
    let w = windows(&bytes);
    // Windows are trimmed to what their spans copy from, so the section
    // may be small; any byte of it is covered by a window sum.
    assert!(w.len() >= 32, "windows {w:?}");
    let mid = w.start + w.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let tmp = idx.with_extension("new");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &idx).unwrap();

    let m = env.mount("win:1", &[]);
    assert_eq!(std::fs::read(m.join("small")).unwrap(), b"small file");
    match std::fs::read(m.join("big")) {
        Ok(got) => panic!("read {} bytes through a damaged window", got.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    // The mount goes on serving what the damage does not touch.
    assert_eq!(std::fs::read(m.join("small")).unwrap(), b"small file");
    m.unmount();

    let fsck = env.ok(&["fsck"]);
    assert!(fsck.contains("inflate windows damaged"), "{fsck}");
    let m = env.mount("win:1", &[]);
    assert!(
        std::fs::read(m.join("big")).unwrap() == big,
        "big reads right"
    );
}
