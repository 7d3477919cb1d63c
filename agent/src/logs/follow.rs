//! Following one log file: new lines as they are appended, across restarts of the
//! instance (its file goes on) and copy-truncate rotations (the file shrinks: reading
//! starts again at its new beginning; what went to `.1` was read already).
//!
//! The file is polled every [`POLL`]: a `stat` per followed file, cheap enough at that
//! rate, and with no watch descriptors to leak or run out of.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use super::read::{line_text, split_lines};

/// How often a followed file is checked for new lines.
pub const POLL: Duration = Duration::from_millis(20);
/// At most this much is read at once.
pub const CHUNK: u64 = 1024 * 1024;

pub struct Follower {
    pub path: PathBuf,
    /// Where the next read starts.
    pos: u64,
    /// The file's inode: another one means the file was replaced (instance redeployed).
    ino: Option<u64>,
    /// A line not yet complete.
    partial: Vec<u8>,
    /// Dropping the rest of a line that was cut.
    dropping: bool,
}

impl Follower {
    /// Follows `path` from byte `pos` (just past the last line already sent).
    pub fn new(path: PathBuf, pos: u64) -> Follower {
        let ino = std::fs::metadata(&path).ok().map(|m| m.ino());
        Follower {
            path,
            pos,
            ino,
            partial: Vec::new(),
            dropping: false,
        }
    }

    /// Reads what was appended since the last call, as complete lines; true when more
    /// is waiting (a full [`CHUNK`] was read).
    pub fn poll(&mut self, out: &mut Vec<String>) -> std::io::Result<bool> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Not there (yet, or any more): the instance may be redeployed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if self.ino != Some(meta.ino()) {
            if self.ino.is_some() {
                self.restart(out);
            }
            self.ino = Some(meta.ino());
        }
        let len = meta.len();
        if len < self.pos {
            // Copy-truncate rotation: what is there now was written after the cut.
            self.restart(out);
        }
        if len == self.pos {
            return Ok(false);
        }
        let want = (len - self.pos).min(CHUNK);
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.pos))?;
        let before = self.partial.len();
        file.take(want).read_to_end(&mut self.partial)?;
        let got = (self.partial.len() - before) as u64;
        self.pos += got;
        split_lines(&mut self.partial, &mut self.dropping, out);
        Ok(got == CHUNK)
    }

    /// Starts again at the beginning of the file; a partial line read before is sent
    /// as it was (its end went with the old content).
    fn restart(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() && !self.dropping {
            out.push(line_text(&self.partial));
        }
        self.partial.clear();
        self.dropping = false;
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &std::path::Path, text: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
    }

    #[test]
    fn follows_appends_and_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        append(&path, "old\n");
        let mut f = Follower::new(path.clone(), 4);
        let mut out = Vec::new();
        append(&path, "one\ntw");
        f.poll(&mut out).expect("poll");
        assert_eq!(out, ["one"]);
        append(&path, "o\n");
        f.poll(&mut out).expect("poll");
        assert_eq!(out, ["one", "two"]);
        super::super::rotate(&path, 2).expect("rotate");
        append(&path, "after\n");
        f.poll(&mut out).expect("poll");
        assert_eq!(out, ["one", "two", "after"]);
        // Gone for a while (the instance is being redeployed): nothing, no error.
        std::fs::remove_file(&path).expect("rm");
        assert!(!f.poll(&mut out).expect("poll while gone"));
        assert_eq!(out.len(), 3);
    }
}
