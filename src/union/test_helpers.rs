//! What the union's tests share: a path walked from the root, and a
//! directory's names.

use super::*;

/// The attributes at `path` (relative to the root), looked up name by name.
pub(super) fn walk(fs: &UnionFs, path: &str) -> Result<Attr> {
    let mut attr = fs.getattr(ROOT_INO)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        attr = fs.lookup(attr.ino, c.as_bytes())?;
    }
    Ok(attr)
}

/// The names in directory `path`, in readdir order, without . and ..
pub(super) fn list(fs: &UnionFs, path: &str) -> Vec<String> {
    let ino = walk(fs, path).unwrap().ino;
    let fh = fs.opendir(ino).unwrap();
    let mut names = Vec::new();
    fs.readdir(ino, fh, 0, false, |e, _| {
        names.push(String::from_utf8_lossy(e.name).into_owned());
        true
    })
    .unwrap();
    fs.releasedir(fh);
    names.retain(|n| n != "." && n != "..");
    names
}
