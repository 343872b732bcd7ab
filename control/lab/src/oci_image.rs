//! OCI image archives, built here from files on this machine, for the lab's containerd mode:
//! no registry is reachable, so its images (a sandbox's pause container, the probe server)
//! are written as an OCI image layout in a tar and loaded with
//! `ctr -n k8s.io images import ARCHIVE`.
//!
//! An archive holds one image: one uncompressed layer, its config, a manifest, and
//! `index.json` naming the manifest. It is deterministic (mtime 0, owner 0:0, entries
//! sorted, no timestamps in the JSON), so the same files give the same image ID and
//! re-importing changes nothing.
//!
//! The JSON documents are small structs of this module rather than the `oci-spec` crate's:
//! that keeps annotations in a `HashMap`, so an index carrying two of them would not come
//! out byte for byte the same on every write.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::{Serialize, Serializer};
use sha2::{Digest as _, Sha256};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The full image name on a manifest in `index.json`: containerd's import (1.6) names the
/// image by it, verbatim, and prefers it to the OCI ref name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI ref name, which the OCI layout defines as the tag only (what containerd's own
/// export writes beside the full name); `ctr import` would prefix a bare tag with
/// `import-DATE`, so it only matters to other tools.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const ARCHITECTURE: &str = "amd64";
const OS: &str = "linux";
const DIR_MODE: u32 = 0o755;
const BLOB_MODE: u32 = 0o644;

/// Why an image archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A file to go into the image (or the program to list libraries of) is not there.
    #[error("{}: no such file", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// A path in the image that cannot be one (relative, `..`, a file where a directory is).
    #[error("image path {}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: &'static str },
    #[error("image name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("`ldd {}` failed: {detail}", binary.display())]
    Ldd { binary: PathBuf, detail: String },
    #[error("{}: ldd finds no {libraries}", binary.display())]
    LibraryNotFound { binary: PathBuf, libraries: String },
    /// The layer came out different the second time it was written (it is written twice:
    /// once to learn its digest, once into the archive).
    #[error("{}: the image's files changed while it was written", path.display())]
    Changed { path: PathBuf },
    #[error("image JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An error reading `path`: one that is not there is Missing.
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::NotFound => OciError::Missing {
            path: path.to_path_buf(),
        },
        _ => OciError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// An error writing `path`.
fn write_error(path: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One image: its fully qualified name, its files, and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// `host/path:tag`, e.g. `localhost/kxdp-lab-probe:0.1.0`. The host is required: the
    /// CRI looks a bare `name:tag` up as `docker.io/library/name:tag`.
    pub name: String,
    pub files: Vec<ImageFile>,
    /// The image config's `Entrypoint` (the CRI runs it when a container gives no command).
    pub entrypoint: Vec<String>,
    /// The image config's `Env`, `KEY=value` each.
    pub env: Vec<String>,
}

/// A file of this machine and where it goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub source: PathBuf,
    /// Absolute, in the image; its parent directories are made (0755).
    pub path: PathBuf,
    /// Permission bits (`0o755`).
    pub mode: u32,
}

/// A sha256 digest, shown as OCI writes it (`sha256:<hex>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------- the JSON documents

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

impl Descriptor {
    fn of(media_type: &'static str, blob: &[u8]) -> Descriptor {
        Descriptor {
            media_type,
            digest: Digest::of(blob),
            size: blob.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

/// The image config: containerd's unpack checks its platform against the host's.
#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RunConfig<'a> {
    #[serde(rename = "Entrypoint")]
    entrypoint: &'a [String],
    #[serde(rename = "Env")]
    env: &'a [String],
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct ImageLayout {
    #[serde(rename = "imageLayoutVersion")]
    version: &'static str,
}

// ---------------------------------------------------------------- the archive

/// Writes `spec` as an OCI image layout tar at `out` (through `out.partial`, renamed once
/// complete, so a failed write leaves no archive behind). Returns the manifest's digest,
/// which `ctr images ls` shows as the image's.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> Result<Digest, OciError> {
    let tag = tag_of(&spec.name)?;
    let entries = layer_entries(&spec.files)?;
    // The layer is written twice rather than held: once to learn its digest, then into the
    // archive. A program's layer is as big as the program (~100 MB unoptimised).
    let (layer_digest, layer_size) = write_layer(&entries, Hashing::new(io::sink()), out)?.finish();
    let config = serde_json::to_vec(&ImageConfig {
        architecture: ARCHITECTURE,
        os: OS,
        config: RunConfig {
            entrypoint: &spec.entrypoint,
            env: &spec.env,
        },
        // Uncompressed, the layer's digest is its diff ID.
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![layer_digest],
        },
    })?;
    let layer = Descriptor {
        media_type: LAYER_MEDIA_TYPE,
        digest: layer_digest,
        size: layer_size,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
        layers: vec![layer],
    })?;
    let mut named = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest);
    named.platform = Some(Platform {
        architecture: ARCHITECTURE,
        os: OS,
    });
    named.annotations = BTreeMap::from([
        (IMAGE_NAME_ANNOTATION, spec.name.clone()),
        (REF_NAME_ANNOTATION, tag.to_string()),
    ]);
    let manifest_digest = named.digest;
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: vec![named],
    })?;
    let layout = serde_json::to_vec(&ImageLayout { version: "1.0.0" })?;

    let mut blobs: BTreeMap<Digest, Option<&[u8]>> = BTreeMap::new();
    blobs.insert(layer_digest, None);
    blobs.insert(Digest::of(&config), Some(&config));
    blobs.insert(manifest_digest, Some(&manifest));

    let partial = partial_path(out);
    let written = (|| {
        let err = |e| write_error(&partial)(e);
        let file = File::create(&partial).map_err(err)?;
        let mut ar = tar::Builder::new(BufWriter::new(file));
        // In name order: blobs/, blobs/sha256/, the blobs by digest, index.json, oci-layout.
        append_dir(&mut ar, "blobs/").map_err(err)?;
        append_dir(&mut ar, "blobs/sha256/").map_err(err)?;
        for (digest, bytes) in &blobs {
            let name = format!("blobs/sha256/{}", digest.hex());
            match bytes {
                Some(bytes) => append_file(&mut ar, &name, bytes).map_err(err)?,
                None => {
                    let header = file_header(&name, layer_size).map_err(err)?;
                    ar.get_mut().write_all(header.as_bytes()).map_err(err)?;
                    // A tar is whole blocks, so the layer needs no padding after it.
                    let again = write_layer(&entries, Hashing::new(ar.get_mut()), &partial)?;
                    if again.finish() != (layer_digest, layer_size) {
                        return Err(OciError::Changed {
                            path: out.to_path_buf(),
                        });
                    }
                }
            }
        }
        append_file(&mut ar, "index.json", &index).map_err(err)?;
        append_file(&mut ar, "oci-layout", &layout).map_err(err)?;
        let mut file = ar.into_inner().map_err(err)?;
        file.flush().map_err(err)?;
        Ok(())
    })();
    match written {
        Ok(()) => fs::rename(&partial, out).map_err(write_error(out))?,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    }
    Ok(manifest_digest)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The tag of a fully qualified `host[:port]/path:tag` (what the OCI ref name carries).
fn tag_of(name: &str) -> Result<&str, OciError> {
    let bad = |reason| OciError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.contains('@') {
        return Err(bad("a digest reference is not a name"));
    }
    let Some((repo, tag)) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) else {
        return Err(bad("no tag (want host/path:tag)"));
    };
    let tag_ok = tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if !tag_ok {
        return Err(bad("the tag wants letters, digits, _ . - (at most 128)"));
    }
    let Some((host, path)) = repo.split_once('/') else {
        return Err(bad("no host (want host/path:tag, e.g. localhost/...)"));
    };
    if !(host == "localhost" || host.contains('.') || host.contains(':')) {
        return Err(bad(
            "the first part is no host (localhost, or with a dot or port): \
             the CRI would look the image up under docker.io",
        ));
    }
    let path_ok = path.split('/').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    });
    if !path_ok {
        return Err(bad("the path wants lowercase letters, digits, . _ -"));
    }
    Ok(tag)
}

// ---------------------------------------------------------------- the layer

/// One entry of the layer: a directory above some file, or a file from this machine.
#[derive(Debug)]
enum Entry {
    Dir,
    File { source: PathBuf, mode: u32 },
}

/// The layer's entries by their path in it (relative, as layers have them), which sorts a
/// directory before what it holds.
fn layer_entries(files: &[ImageFile]) -> Result<BTreeMap<PathBuf, Entry>, OciError> {
    let mut entries = BTreeMap::new();
    for f in files {
        let bad = |reason| OciError::BadPath {
            path: f.path.clone(),
            reason,
        };
        if !f.path.is_absolute() {
            return Err(bad("not absolute"));
        }
        let mut rel = PathBuf::new();
        for c in f.path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(part) => rel.push(part),
                _ => return Err(bad("has `.` or `..`")),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(bad("is the root directory"));
        }
        for dir in rel.ancestors().skip(1) {
            if dir.as_os_str().is_empty() {
                break;
            }
            if let Some(Entry::File { .. }) = entries.insert(dir.to_path_buf(), Entry::Dir) {
                return Err(bad("a file is where its directory would be"));
            }
        }
        let file = Entry::File {
            source: f.source.clone(),
            mode: f.mode & 0o7777,
        };
        if entries.insert(rel, file).is_some() {
            return Err(bad("is in the image twice (or also a directory)"));
        }
    }
    Ok(entries)
}

/// Writes the layer tar (the end-of-archive blocks included) through `w`, whose writes go
/// to `dest` (named when they fail; a failing read names the file read).
fn write_layer<W: Write>(
    entries: &BTreeMap<PathBuf, Entry>,
    w: Hashing<W>,
    dest: &Path,
) -> Result<Hashing<W>, OciError> {
    let mut layer = tar::Builder::new(w);
    for (path, entry) in entries {
        match entry {
            Entry::Dir => {
                let mut name = path.as_os_str().to_owned();
                name.push("/");
                append_dir(&mut layer, name).map_err(write_error(dest))?;
            }
            Entry::File { source, mode } => {
                let file = File::open(source).map_err(io_error(source))?;
                let len = file.metadata().map_err(io_error(source))?.len();
                let mut h = header(tar::EntryType::Regular, *mode, len);
                // Never more than the header promised; a file that shrank shows up as a
                // different digest the second time round.
                let appended = layer.append_data(&mut h, path, file.take(len));
                appended.map_err(|e| {
                    if layer.get_ref().write_failed {
                        write_error(dest)(e)
                    } else {
                        io_error(source)(e)
                    }
                })?;
            }
        }
    }
    layer.into_inner().map_err(write_error(dest))
}

/// A header as every entry of these archives has it: owner 0:0, mtime 0, no user names.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir<W: Write>(ar: &mut tar::Builder<W>, name: impl AsRef<Path>) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, DIR_MODE, 0);
    ar.append_data(&mut h, name, io::empty())
}

fn append_file<W: Write>(ar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, BLOB_MODE, bytes.len() as u64);
    ar.append_data(&mut h, name, bytes)
}

/// The header of a blob whose bytes the caller writes itself.
fn file_header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = header(tar::EntryType::Regular, BLOB_MODE, size);
    h.set_path(name)?;
    h.set_cksum();
    Ok(h)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
    /// Whether a write failed: an error in the middle of a tar entry may be either side's.
    write_failed: bool,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
            write_failed: false,
        }
    }

    fn finish(self) -> (Digest, u64) {
        (Digest(self.hasher.finalize().into()), self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(buf)
            .inspect_err(|_| self.write_failed = true)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.write_failed = true)
    }
}

// ---------------------------------------------------------------- a program's files

/// `binary` at `at` in the image, and every shared library it loads as `ldd` resolves it
/// here, so it starts in an image holding nothing else (deploy/image/assemble-rootfs.sh
/// does the same for the runtime image): the loader at the path the binary's PT_INTERP
/// names (ldd's line without `=>`); each other library under the name ldd found it by, in
/// the directory its path resolves to (/usr/lib/x86_64-linux-gnu on Debian's merged /usr),
/// which the loader searches by default, so the image needs neither /lib symlinks nor an
/// ld.so.cache. Modes are the files' own here (after symlinks). A static binary is alone.
pub fn program_files(binary: &Path, at: &Path) -> Result<Vec<ImageFile>, OciError> {
    let mut files = vec![image_file(binary, at.to_path_buf())?];
    let ldd_error = |detail: String| OciError::Ldd {
        binary: binary.to_path_buf(),
        detail,
    };
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ldd_error(format!("cannot run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let loaded = parse_ldd(&stdout).map_err(|missing| OciError::LibraryNotFound {
        binary: binary.to_path_buf(),
        libraries: missing.join(", "),
    })?;
    if !out.status.success() {
        if format!("{stdout}{stderr}").contains("not a dynamic executable") {
            return Ok(files);
        }
        return Err(ldd_error(format!("{}: {}", out.status, stderr.trim())));
    }
    for lib in loaded {
        let dest = match &lib {
            Loaded::Loader(path) => path.clone(),
            Loaded::Library(path) => {
                let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                    return Err(ldd_error(format!("odd library path {}", path.display())));
                };
                fs::canonicalize(dir).map_err(io_error(dir))?.join(name)
            }
        };
        let source = match lib {
            Loaded::Loader(p) | Loaded::Library(p) => p,
        };
        files.push(image_file(&source, dest)?);
    }
    Ok(files)
}

fn image_file(source: &Path, path: PathBuf) -> Result<ImageFile, OciError> {
    let meta = fs::metadata(source).map_err(io_error(source))?;
    if !meta.is_file() {
        return Err(OciError::NotAFile {
            path: source.to_path_buf(),
        });
    }
    Ok(ImageFile {
        source: source.to_path_buf(),
        path,
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// What one line of ldd's listing names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Loaded {
    /// `/lib64/ld-linux-x86-64.so.2 (0x...)`: the program interpreter, by its PT_INTERP path.
    Loader(PathBuf),
    /// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`.
    Library(PathBuf),
}

/// The files in ldd's listing; Err(the names of those it found no file for). The vDSO
/// (`linux-vdso.so.1 (0x...)`) has no file and is left out.
fn parse_ldd(listing: &str) -> Result<Vec<Loaded>, Vec<String>> {
    let mut loaded = Vec::new();
    let mut missing = Vec::new();
    for line in listing.lines().map(str::trim) {
        if let Some((name, found)) = line.split_once("=>") {
            let found = found.trim();
            if found.starts_with("not found") {
                missing.push(name.trim().to_string());
            } else if let Some(path) = found
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                loaded.push(Loaded::Library(PathBuf::from(path)));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            loaded.push(Loaded::Loader(PathBuf::from(path)));
        }
    }
    if missing.is_empty() {
        Ok(loaded)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use testkit::TempDir;

    const NAME: &str = "localhost/kxdp-test:1.0";

    /// Two files, one nested three directories deep.
    fn spec(dir: &TempDir) -> ImageSpec {
        dir.write("tool", "#!/bin/true\n");
        dir.write("hello", "hello\n");
        ImageSpec {
            name: NAME.to_string(),
            files: vec![
                ImageFile {
                    source: dir.path().join("tool"),
                    path: PathBuf::from("/usr/local/bin/tool"),
                    mode: 0o755,
                },
                ImageFile {
                    source: dir.path().join("hello"),
                    path: PathBuf::from("/etc/hello"),
                    mode: 0o644,
                },
            ],
            entrypoint: vec!["/usr/local/bin/tool".into(), "serve".into()],
            env: vec!["PATH=/usr/local/bin".into()],
        }
    }

    /// An entry of a tar: its name, type, mode, owner, mtime and bytes.
    #[derive(Debug)]
    struct Listed {
        name: String,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
        bytes: Vec<u8>,
    }

    fn entries(tar_bytes: &[u8]) -> Vec<Listed> {
        let mut ar = tar::Archive::new(tar_bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                Listed {
                    name: e.path().unwrap().to_string_lossy().into_owned(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    owner: (h.uid().unwrap(), h.gid().unwrap()),
                    mtime: h.mtime().unwrap(),
                    bytes,
                }
            })
            .collect()
    }

    fn blob<'a>(archive: &'a [Listed], digest: &Value) -> &'a [u8] {
        let digest = digest.as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let name = format!("blobs/sha256/{hex}");
        &archive
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no blob {digest}"))
            .bytes
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// The blob `desc` points to, checked against its size.
    fn follow<'a>(archive: &'a [Listed], desc: &Value) -> &'a [u8] {
        let bytes = blob(archive, &desc["digest"]);
        assert_eq!(desc["size"].as_u64(), Some(bytes.len() as u64), "{desc}");
        bytes
    }

    #[test]
    fn the_archive_is_an_image_layout_that_chains_up() {
        let dir = TempDir::new("oci");
        let out = dir.path().join("image.tar");
        let digest = write_archive(&spec(&dir), &out).unwrap();
        let archive = entries(&fs::read(&out).unwrap());

        let names: Vec<&str> = archive.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 7, "{names:?}");
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(&names[5..], ["index.json", "oci-layout"]);
        assert!(names.is_sorted(), "{names:?}");
        for e in &archive {
            assert_eq!((e.owner, e.mtime), ((0, 0), 0), "{}", e.name);
            if let Some(hex) = e
                .name
                .strip_prefix("blobs/sha256/")
                .filter(|h| !h.is_empty())
            {
                assert_eq!(
                    Digest::of(&e.bytes).hex(),
                    hex,
                    "a blob is named by its digest"
                );
            }
        }
        let layout = json(&archive[6].bytes);
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");

        let index = json(&archive[5].bytes);
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
        let named = &index["manifests"][0];
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(named["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            named["digest"],
            digest.to_string(),
            "write_archive returns it"
        );
        assert_eq!(named["annotations"][IMAGE_NAME_ANNOTATION], NAME);
        assert_eq!(named["annotations"][REF_NAME_ANNOTATION], "1.0");
        assert_eq!(named["platform"]["architecture"], "amd64");
        assert_eq!(named["platform"]["os"], "linux");

        let manifest = json(follow(&archive, named));
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        let config = json(follow(&archive, &manifest["config"]));
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/usr/local/bin/tool", "serve"])
        );
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!(["PATH=/usr/local/bin"])
        );
        assert_eq!(config["rootfs"]["type"], "layers");

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([layers[0]["digest"]]),
            "an uncompressed layer's diff ID is its digest"
        );
        let layer = entries(follow(&archive, &layers[0]));
        let listed: Vec<(&str, tar::EntryType, u32)> = layer
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.mode))
            .collect();
        use tar::EntryType::{Directory as D, Regular as F};
        assert_eq!(
            listed,
            [
                ("etc/", D, 0o755),
                ("etc/hello", F, 0o644),
                ("usr/", D, 0o755),
                ("usr/local/", D, 0o755),
                ("usr/local/bin/", D, 0o755),
                ("usr/local/bin/tool", F, 0o755),
            ]
        );
        for e in &layer {
            assert_eq!((e.owner, e.mtime), ((0, 0), 0), "{}", e.name);
        }
        assert_eq!(layer[1].bytes, b"hello\n");
        assert_eq!(layer[5].bytes, b"#!/bin/true\n");
    }

    #[test]
    fn the_same_spec_gives_the_same_bytes() {
        let dir = TempDir::new("oci-same");
        let spec = spec(&dir);
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let da = write_archive(&spec, &a).unwrap();
        let db = write_archive(&spec, &b).unwrap();
        assert_eq!(da, db);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert!(!partial_path(&a).exists());
    }

    #[test]
    fn a_missing_file_leaves_no_archive() {
        let dir = TempDir::new("oci-missing");
        let mut spec = spec(&dir);
        spec.files[1].source = dir.path().join("gone");
        let out = dir.path().join("image.tar");
        let err = write_archive(&spec, &out).unwrap_err();
        assert!(
            matches!(&err, OciError::Missing { path } if path.ends_with("gone")),
            "{err}"
        );
        assert!(!out.exists() && !partial_path(&out).exists());
    }

    #[test]
    fn paths_that_cannot_be_in_an_image() {
        let dir = TempDir::new("oci-paths");
        for (path, also) in [
            ("usr/bin/tool", None),
            ("/usr/../tool", None),
            ("/", None),
            ("/etc/hello", None),            // twice
            ("/etc", None),                  // a file where a directory is
            ("/usr/local/bin/tool/x", None), // a directory where a file is
            ("/a/b", Some("/a")),            // in either order
        ] {
            let mut spec = spec(&dir);
            let mut add = |p: &str| {
                spec.files.push(ImageFile {
                    source: dir.path().join("hello"),
                    path: PathBuf::from(p),
                    mode: 0o644,
                })
            };
            add(path);
            if let Some(p) = also {
                add(p);
            }
            let err = write_archive(&spec, &dir.path().join("x.tar")).unwrap_err();
            assert!(matches!(err, OciError::BadPath { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn names_are_fully_qualified_with_a_tag() {
        assert_eq!(tag_of("localhost/kxdp-lab-probe:0.1.0").unwrap(), "0.1.0");
        assert_eq!(tag_of("registry.example:5000/a/b:v1_x").unwrap(), "v1_x");
        for bad in [
            "kxdp-lab-probe:0.1.0",      // docker.io/library/... to the CRI
            "localhost/kxdp-lab-probe",  // no tag
            "localhost:5000/probe",      // the port is no tag
            "localhost/Probe:1",         // uppercase path
            "localhost/probe:-1",        // a tag starts with a letter, digit or _
            "localhost/probe@sha256:00", // a digest
            "localhost//probe:1",        // an empty component
        ] {
            let err = tag_of(bad).unwrap_err();
            assert!(matches!(err, OciError::BadName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn ldd_listing() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        assert_eq!(
            parse_ldd(listing).unwrap(),
            [
                Loaded::Library("/lib/x86_64-linux-gnu/libgcc_s.so.1".into()),
                Loaded::Library("/lib/x86_64-linux-gnu/libc.so.6".into()),
                Loaded::Loader("/lib64/ld-linux-x86-64.so.2".into()),
            ]
        );
        let missing = format!("{listing}\tlibfoo.so.1 => not found\n\tlibbar.so => not found\n");
        assert_eq!(
            parse_ldd(&missing).unwrap_err(),
            ["libfoo.so.1", "libbar.so"]
        );
    }

    #[test]
    fn a_program_comes_with_its_loader_and_libc() {
        let files = program_files(Path::new("/bin/true"), Path::new("/bin/t")).unwrap();
        assert_eq!(files[0].path, Path::new("/bin/t"));
        assert_eq!(files[0].mode, 0o755);
        let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        assert!(
            paths.contains(&Path::new("/lib64/ld-linux-x86-64.so.2")),
            "the loader where PT_INTERP names it: {paths:?}"
        );
        let libc = files
            .iter()
            .find(|f| f.path.file_name().is_some_and(|n| n == "libc.so.6"))
            .unwrap_or_else(|| panic!("no libc: {paths:?}"));
        let dir = libc.path.parent().unwrap();
        assert_eq!(
            fs::canonicalize(dir).unwrap(),
            dir,
            "libc in the directory its path resolves to (/usr/lib/... on a merged /usr)"
        );
        assert!(libc.source.is_file());
    }

    #[test]
    fn a_missing_program() {
        let err = program_files(Path::new("/nonexistent/prog"), Path::new("/p")).unwrap_err();
        assert!(matches!(err, OciError::Missing { .. }), "{err}");
    }
}
