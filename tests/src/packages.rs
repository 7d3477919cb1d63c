//! Building packages for tests, crafted ones included.

use std::path::Path;

use tar::{EntryType, Header};

/// One entry of a test archive.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    /// A character device.
    Device(&'a str),
    /// A file whose name is written raw, so `..` and absolute paths survive.
    RawFile(&'a str, &'a [u8]),
}

/// A `.tar.gz` of the entries, in memory.
pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = Header::new_gnu();
        match e {
            Entry::File(path, data, mode) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).expect("file");
            }
            Entry::Dir(path) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).expect("dir");
            }
            Entry::Symlink(path, target) | Entry::HardLink(path, target) => {
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).expect("link");
            }
            Entry::Device(path) => {
                h.set_entry_type(EntryType::Char);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).expect("device");
            }
            Entry::RawFile(path, data) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, *data).expect("raw file");
            }
        }
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// A release whose `bin/server` prints its version, then sleeps (or exits 1 when
/// `broken`).
pub fn release(version: &str, broken: bool) -> Vec<u8> {
    let script = if broken {
        format!("#!/bin/sh\necho 'version {version} is broken' >&2\nexit 1\n")
    } else {
        format!("#!/bin/sh\necho \"version {version} in $PWD\"\nexec sleep 1000\n")
    };
    tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", script.as_bytes(), 0o755),
    ])
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write package");
    path
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
