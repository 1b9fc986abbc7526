//! `build -` : the context read from stdin, as Docker reads it. A tar
//! (plain, gzip or zstd) is unpacked into a directory and is the context;
//! anything else is taken as the Dockerfile itself, with an empty context.

use super::StepError;
use crate::layer::decompressed;
use std::io::Read;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinContext {
    /// A tar, unpacked: the context (its Dockerfile inside).
    Tar,
    /// A Dockerfile, written to `Dockerfile` in the otherwise empty context.
    Dockerfile,
}

fn io(p: &Path, e: std::io::Error) -> StepError {
    StepError::Io {
        path: p.display().to_string(),
        source: e,
    }
}

fn is_tar(bytes: &[u8]) -> bool {
    let Ok(mut r) = decompressed(bytes) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == block.len() && &block[257..262] == b"ustar"
}

/// Reads `input` to its end and makes the context of it in `dir` (an
/// empty directory).
pub fn unpack_stdin(input: &mut dyn Read, dir: &Path) -> Result<StdinContext, StepError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| io(Path::new("<stdin>"), e))?;
    if !is_tar(&bytes) {
        if bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(StepError::Msg(
                "stdin: a compressed stream that is not a tar".into(),
            ));
        }
        let f = dir.join("Dockerfile");
        std::fs::write(&f, &bytes).map_err(|e| io(&f, e))?;
        return Ok(StdinContext::Dockerfile);
    }
    let reader = decompressed(&bytes[..]).map_err(|e| io(Path::new("<stdin>"), e))?;
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    // `unpack` keeps every entry inside `dir` (no `..`, no symlinked parents).
    ar.unpack(dir)
        .map_err(|e| StepError::Msg(format!("stdin: not a readable tar: {e}")))?;
    Ok(StdinContext::Tar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TarBuilder, gzip};

    #[test]
    fn a_tar_or_a_dockerfile_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TarBuilder::new();
        t.file("Dockerfile", 0o644, b"FROM scratch\n")
            .file("app/a.txt", 0o600, b"a\n");
        let tar = t.finish();
        for input in [tar.clone(), gzip(&tar)] {
            let d = tempfile::tempdir_in(dir.path()).unwrap();
            assert_eq!(
                unpack_stdin(&mut &input[..], d.path()).unwrap(),
                StdinContext::Tar
            );
            assert_eq!(std::fs::read(d.path().join("app/a.txt")).unwrap(), b"a\n");
        }
        let d = tempfile::tempdir_in(dir.path()).unwrap();
        let text = b"FROM scratch\nCOPY x /x\n";
        assert_eq!(
            unpack_stdin(&mut &text[..], d.path()).unwrap(),
            StdinContext::Dockerfile
        );
        assert_eq!(std::fs::read(d.path().join("Dockerfile")).unwrap(), text);
        // A tar's entries stay inside.
        let mut t = TarBuilder::new();
        t.raw(b"../out.txt", tar::EntryType::Regular, b"x");
        let evil = t.finish();
        let d = tempfile::tempdir_in(dir.path()).unwrap();
        let _ = unpack_stdin(&mut &evil[..], d.path());
        assert!(!d.path().parent().unwrap().join("out.txt").exists());
    }
}
