//! Entry points for hostile-input testing, shared by the seeded mutation
//! tests (`src/mutation_tests/`) and the cargo-fuzz targets (`fuzz/`): each
//! feeds bytes to a real parser the way layerfs meets them (a layer ingested
//! into a store, an index opened and read, an archive loaded, a Dockerfile
//! parsed, a credentials file read) and returns the error's text or Ok.
//!
//! Each also checks what must hold whatever the bytes: an error is one line,
//! a store touched stays fsck-clean with no temp file left. A broken rule
//! panics, which both harnesses report. Not part of the API.

use crate::archive::{LoadOptions, load_reader};
use crate::layer::{
    Compression, EntryKind, Layer, LayerIndex, LayerWriter, SpanCache, TarMeta, TarWriter, ingest,
};
use crate::oci::{Digest, ImageConfig, ManifestKind, Platform, Reference};
use crate::store::Store;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Panics unless `msg` is one line: errors are printed as one line.
fn one_line(msg: String) -> String {
    assert!(!msg.contains('\n'), "an error of several lines: {msg:?}");
    msg
}

/// A throwaway directory, in memory where the machine has /dev/shm: a
/// store fsyncs every blob, and thousands of cases would wait on the disk.
fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .expect("tempdir")
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = temp_dir();
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

/// A store after any input: every blob whole, nothing half-written.
fn assert_store_clean(store: &Store) {
    let report = crate::image::fsck(store).expect("fsck");
    assert!(report.damaged.is_empty(), "fsck: {:?}", report.damaged);
    let left: Vec<_> = std::fs::read_dir(store.tmp_dir())
        .expect("tmp dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// A layer blob (tar, gzip or zstd): ingested into a new store, then every
/// entry of its index visited and every file read at its start and end.
pub fn layer_blob(data: &[u8]) -> Result<(), String> {
    let (_dir, store) = temp_store();
    let out = match ingest(&store, data, None) {
        Ok(info) => read_layer(&store, &info.digest),
        Err(e) => Err(e.to_string()),
    };
    assert_store_clean(&store);
    out.map_err(one_line)
}

/// Everything a mount asks of a layer: each entry's fields, each directory's
/// children found again by name, and each file's bytes.
fn read_layer(store: &Store, digest: &Digest) -> Result<(), String> {
    let layer = Layer::open(store, digest, SpanCache::new(8 << 20)).map_err(|e| e.to_string())?;
    let index = &layer.index;
    let mut buf = vec![0u8; 64 << 10];
    for id in 0..index.len() {
        let e = index.entry(id);
        let _ = (
            e.path(),
            e.link(),
            e.mode(),
            e.mtime(),
            e.rdev(),
            e.target(),
        );
        let _ = e.xattrs().count();
        if let Some(g) = e.group() {
            let _ = index.group_members(g).take(1 << 16).count();
        }
        if let Some(dir) = e.as_dir() {
            let _ = (dir.path(), dir.is_opaque(), dir.entry().id());
            for child in dir.children().take(1 << 16) {
                let name = index.entry(child).name();
                let _ = dir.lookup(name);
            }
        }
        if e.kind() == EntryKind::Regular && e.size() > 0 {
            let _ = e.sparse();
            // The head of a large file costs a whole span's decode per case
            // and tests nothing its tail does not.
            if e.size() <= 1 << 20 {
                layer.read_at(&e, 0, &mut buf).map_err(|e| e.to_string())?;
            }
            let tail = e.size().saturating_sub(buf.len() as u64);
            layer
                .read_at(&e, tail, &mut buf)
                .map_err(|e| e.to_string())?;
            let _ = layer.seek_data(&e, 0, false);
        }
    }
    for dir in [b"".as_slice(), b"etc", b"a/b/c"] {
        let _ = index.find_dir(dir);
    }
    for cp in 0..index.checkpoints() {
        let c = index.checkpoint(cp);
        let _ = index.window(&c).map(|w| w.len());
    }
    Ok(())
}

/// A stored layer that index files are read through: its blob and the
/// index ingest wrote for it (`seed`). Its store is removed on drop; a
/// fuzz target keeps one for the whole run.
pub struct IndexFixture {
    _dir: tempfile::TempDir,
    store: Store,
    digest: Digest,
    seed: Vec<u8>,
    /// One mutated index in the store at a time.
    busy: Mutex<()>,
}

impl Default for IndexFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexFixture {
    pub fn new() -> IndexFixture {
        let (dir, store) = temp_store();
        let mut w = TarWriter::new(Vec::new());
        write_sample(&mut w, true).expect("sample layer");
        let mut tar = w.finish().expect("finish sample");
        tar.truncate(tar.len() - 1024); // the end marker, written again below
        append_sparse(&mut tar);
        tar.extend_from_slice(&[0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&tar).expect("gzip");
        let blob = gz.finish().expect("gzip");
        let digest = ingest(&store, blob.as_slice(), None)
            .expect("ingest")
            .digest;
        let seed = std::fs::read(store.layer_index_path(&digest)).expect("read the index");
        IndexFixture {
            _dir: dir,
            store,
            digest,
            seed,
            busy: Mutex::new(()),
        }
    }

    /// The index file ingest wrote: the seed of mutations.
    pub fn seed(&self) -> Vec<u8> {
        self.seed.clone()
    }

    /// A layer index file (for this layer): opened, then read through as a
    /// mount would. With `reseal`, the blob digest and the checksum are made
    /// right first, so damage reaches the parts the checksum protects.
    pub fn read(&self, data: &[u8], reseal: bool) -> Result<(), String> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut data = data.to_vec();
        if reseal {
            reseal_index(&mut data, &self.digest);
        }
        let path = self.store.layer_index_path(&self.digest);
        let tmp = path.with_extension("fuzz");
        std::fs::write(&tmp, &data).expect("write index");
        std::fs::rename(&tmp, &path).expect("rename index");
        let out = match LayerIndex::open(&path, &self.digest) {
            Ok(_) => read_layer(&self.store, &self.digest),
            Err(e) => Err(e.to_string()),
        };
        out.map_err(one_line)
    }
}

/// Rewrites the blob digest (at 32), the window sums and the checksum of an
/// index, as `layer::index` lays them out.
fn reseal_index(data: &mut [u8], digest: &Digest) {
    if data.len() < 64 {
        return;
    }
    data[32..64].copy_from_slice(digest.as_bytes());
    crate::layer::index::reseal(data);
}

/// A small layer with one of each kind of entry, written by our own writer:
/// long names (GNU `L`/`K`), xattrs (PAX), hard links, devices, a fifo, a
/// whiteout and an opaque marker; with `big`, a file past one decoding span.
pub fn write_sample<W: Write>(
    w: &mut TarWriter<W>,
    big: bool,
) -> Result<(), crate::layer::LayerError> {
    let meta = |mode: u32| TarMeta {
        mode,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        xattrs: Vec::new(),
    };
    let long = "d".repeat(120);
    w.add_dir(b"etc", &meta(0o755))?;
    w.add_file(b"etc/hostname", &meta(0o644), 5, &b"host\n"[..])?;
    let caps = TarMeta {
        xattrs: vec![
            (b"security.capability".to_vec(), vec![0, 0, 0, 2, 1, 2, 3]),
            (b"user.note".to_vec(), b"hello".to_vec()),
        ],
        ..meta(0o4755)
    };
    w.add_file(b"etc/ping", &caps, 4, &b"\x7fELF"[..])?;
    w.add_dir(format!("etc/{long}").as_bytes(), &meta(0o700))?;
    let deep = format!("etc/{long}/{}", "f".repeat(150));
    w.add_file(deep.as_bytes(), &meta(0o600), 3, &b"abc"[..])?;
    w.add_symlink(b"etc/link", &meta(0o777), "t".repeat(130).as_bytes())?;
    w.add_hardlink(b"etc/hard", &meta(0o644), b"etc/hostname")?;
    w.add_device(b"etc/null", &meta(0o666), false, 1, 3)?;
    w.add_fifo(b"etc/fifo", &meta(0o644))?;
    w.add_whiteout(b"etc/gone")?;
    w.add_opaque(b"etc")?;
    if big {
        // Letters at random (xorshift): deflate blocks of ordinary length,
        // so the span is cut near INDEX_SPAN and the second one has a window.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..(crate::layer::INDEX_SPAN + 300_000))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 16) as u8
            })
            .collect();
        w.add_file(b"big", &meta(0o644), bytes.len() as u64, bytes.as_slice())?;
    }
    Ok(())
}

/// Appends a GNU sparse member (`sparse`: 4 bytes at 0 and at 8192 of 12288),
/// which our writer never makes but layers from GNU tar do.
fn append_sparse(tar: &mut Vec<u8>) {
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").expect("path");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(8);
    h.set_mtime(1_700_000_000);
    let gnu = h.as_gnu_mut().expect("a GNU header");
    gnu.sparse[0].set_offset(0);
    gnu.sparse[0].set_length(4);
    gnu.sparse[1].set_offset(8192);
    gnu.sparse[1].set_length(4);
    gnu.set_real_size(12288);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let mut data = b"abcdwxyz".to_vec();
    data.resize(512, 0);
    tar.extend_from_slice(&data);
}

/// The sample layer, without its big file, as a plain tar.
pub fn sample_tar() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    write_sample(&mut w, false).expect("sample tar");
    w.finish().expect("finish sample tar")
}

/// A manifest, index or config: parsed as each, and what parsed is written
/// back and must parse the same way again.
pub fn oci_json(data: &[u8]) -> Result<(), String> {
    let mut errors = Vec::new();
    match ManifestKind::parse(data) {
        Ok(ManifestKind::Image(m)) => {
            let again = ManifestKind::parse(&m.to_json());
            assert!(
                matches!(again, Ok(ManifestKind::Image(_))),
                "a parsed manifest does not parse again"
            );
        }
        Ok(ManifestKind::Index(i)) => {
            let _ = i.select(&Platform::host());
            let again = ManifestKind::parse(&i.to_json());
            assert!(
                matches!(again, Ok(ManifestKind::Index(_))),
                "a parsed index does not parse again"
            );
        }
        Err(e) => errors.push(e.to_string()),
    }
    match ImageConfig::parse(data) {
        Ok(c) => {
            let _ = c.platform();
            if let Some(t) = &c.created {
                let _ = crate::oci::time::parse_rfc3339(t);
            }
            ImageConfig::parse(&c.to_json()).expect("a parsed config parses again");
        }
        Err(e) => errors.push(e.to_string()),
    }
    let text = String::from_utf8_lossy(data);
    for word in text.split(['"', '\n', ' ']).take(256) {
        let _ = Reference::parse(word).map(|r| (r.canonical(), r.repository()));
        let _ = word.parse::<Digest>();
        let _ = Platform::parse(word);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(one_line(errors.join("; ")))
    }
}

/// An archive (docker-archive, oci-archive; plain, gzip or zstd) loaded into
/// a new store.
pub fn archive(data: &[u8]) -> Result<(), String> {
    let (_dir, store) = temp_store();
    let out = load_reader(&store, data, "fuzz.tar", &LoadOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_store_clean(&store);
    out.map_err(one_line)
}

/// The members of a real docker-archive but its `manifest.json`, which the
/// manifest target supplies.
fn docker_members() -> &'static Vec<(String, Vec<u8>)> {
    static MEMBERS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    MEMBERS.get_or_init(|| {
        let saved = sample_docker_archive();
        let mut members = Vec::new();
        let mut tar = tar::Archive::new(saved.as_slice());
        for e in tar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            if name == "manifest.json" {
                continue;
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).expect("read member");
            members.push((name, bytes));
        }
        members
    })
}

/// A docker-archive of a one-layer image tagged `fuzz/sample:1`, as `save`
/// writes it.
pub fn sample_docker_archive() -> Vec<u8> {
    let (_dir, store) = temp_store();
    let mut w = LayerWriter::new(&store, Compression::None).expect("layer writer");
    let meta = TarMeta {
        mode: 0o755,
        mtime: 1_700_000_000,
        ..Default::default()
    };
    w.add_dir(b"app", &meta).expect("dir");
    w.add_file(b"app/run", &meta, 3, &b"hi\n"[..])
        .expect("file");
    let layer = w.finish().expect("layer");
    let mut config = crate::image::new_config();
    config.created = Some("2024-01-01T00:00:00Z".into());
    config.rootfs.diff_ids = vec![layer.diff_id];
    let tag = Reference::parse("fuzz/sample:1").expect("reference");
    crate::image::write_image(
        &store,
        &config,
        &[crate::image::layer_descriptor(&layer)],
        Some(&tag),
    )
    .expect("image");
    let mut out = Vec::new();
    crate::archive::save(
        &store,
        &["fuzz/sample:1".to_string()],
        crate::archive::SaveFormat::DockerArchive,
        &mut out,
    )
    .expect("save");
    out
}

/// A docker-archive `manifest.json`, loaded with the members of a real
/// archive around it.
pub fn docker_manifest(data: &[u8]) -> Result<(), String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes).expect("append");
    };
    add("manifest.json", data);
    for (name, bytes) in docker_members() {
        add(name, bytes);
    }
    archive(&tar.into_inner().expect("tar"))
}

/// A Dockerfile and a `.dockerignore` (the same bytes as both): parsed, and
/// each instruction's arguments split into words as a build does.
pub fn dockerfile(data: &[u8]) -> Result<(), String> {
    use crate::dockerfile::{ignore::Ignore, parse};
    let text = String::from_utf8_lossy(data);
    match Ignore::parse(&text) {
        Ok(ignore) => {
            for path in ["a", "a/b/c.txt", ".git/config", "node_modules/x", ""] {
                let _ = ignore.excludes(path);
            }
            let _ = ignore.has_exceptions();
        }
        // A refused pattern is fine; a message over several lines is not (the
        // runner checks every error it is handed).
        Err(e) if e.to_string().contains('\n') => return Err(e.to_string()),
        Err(_) => {}
    }
    let df = parse::parse(&text).map_err(|e| one_line(e.to_string()))?;
    let vars = |name: &str| (name.len() < 4).then(|| format!("v{name}"));
    for ins in &df.instructions {
        let _ = parse::words(&ins.text, df.escape, &vars);
        let _ = parse::word(&ins.text, df.escape, &vars);
        let _ = parse::expand_vars(&ins.text, df.escape, &vars);
        for h in &ins.heredocs {
            let _ = h.content();
        }
        if ins.keyword == parse::Keyword::Healthcheck {
            let _ = parse::healthcheck(ins);
        }
    }
    use crate::dockerfile::stage;
    let stages = stage::stages(&df, &vars).map_err(|e| one_line(e.to_string()))?;
    if let Some(t) = stage::target(&stages, None) {
        stage::needed(&df, &stages, t).map_err(|e| one_line(e.to_string()))?;
    }
    Ok(())
}

/// Registry input, by its first byte: even, an auth.json read for a
/// registry's credentials, then rewritten with new ones (what it held
/// besides is kept); odd, a `WWW-Authenticate` value and a response body
/// (a token answer, an error answer).
pub fn registry(data: &[u8]) -> Result<(), String> {
    let Some((kind, rest)) = data.split_first() else {
        return Ok(());
    };
    if kind % 2 == 1 {
        let text = String::from_utf8_lossy(rest);
        let (header, body) = text.split_once('\n').unwrap_or((&text, ""));
        let (_, detail) = crate::registry::fuzz_response(header, body.as_bytes());
        let _ = one_line(detail);
        return Ok(());
    }
    auth_json(rest).map_err(one_line)
}

fn auth_json(data: &[u8]) -> Result<(), String> {
    use crate::registry::{Credentials, RegistryConfig};
    let dir = temp_dir();
    std::fs::write(dir.path().join("auth.json"), data).expect("write auth.json");
    let config = RegistryConfig::in_dir(dir.path());
    for registry in ["127.0.0.1:5000", "docker.io", "registry-1.docker.io"] {
        config.credentials(registry).map_err(|e| e.to_string())?;
    }
    let creds = Credentials {
        username: "u".into(),
        password: "p:w".into(),
    };
    config
        .save_credentials("127.0.0.1:5000", &creds)
        .map_err(|e| e.to_string())?;
    let again = config
        .credentials("127.0.0.1:5000")
        .map_err(|e| e.to_string())?;
    assert_eq!(again, Some(creds), "saved credentials do not read back");
    Ok(())
}

/// An eStargz blob as a lazy reader meets it: the footer, the TOC it points
/// at, every chunk the TOC lists inflated and checked against its digest.
pub fn estargz_blob(data: &[u8]) -> Result<(), String> {
    use crate::layer::estargz::{FOOTER_SIZE, parse_footer, parse_toc, verify_chunk};
    let fail = |e: crate::layer::estargz::EstargzError| one_line(e.to_string());
    let end = data
        .len()
        .checked_sub(FOOTER_SIZE as usize)
        .ok_or("shorter than a footer")?;
    let at = parse_footer(&data[end..]).map_err(fail)?;
    let toc_member = data
        .get(at as usize..end)
        .ok_or("the TOC offset is outside the blob")?;
    let (toc, _) = parse_toc(toc_member, None).map_err(fail)?;
    let mut first_error = None;
    for c in toc.chunks(at).map_err(fail)? {
        let member = data
            .get(c.start as usize..c.end as usize)
            .ok_or("a chunk is outside the blob")?;
        if let Err(e) = verify_chunk(member, &c) {
            first_error.get_or_insert_with(|| one_line(e.to_string()));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A tar written as eStargz: a one-line error, or a blob whose TOC lists
/// chunks that all verify.
pub fn estargz_write(tar: &[u8]) -> Result<(), String> {
    let mut blob = Vec::new();
    crate::layer::estargz::write(std::io::Cursor::new(tar), &mut blob)
        .map_err(|e| one_line(e.to_string()))?;
    if let Err(e) = estargz_blob(&blob) {
        panic!("an eStargz blob written here does not read back: {e}");
    }
    Ok(())
}
