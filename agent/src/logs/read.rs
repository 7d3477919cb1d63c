//! Reading lines out of a log file: splitting, cutting lines that are too long, and the
//! last lines of a file (for `logs -n`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A line longer than this is cut, with a marker saying how much was left out.
pub const MAX_LINE: usize = 16 * 1024;
/// At most this much of a file is read to find its last lines.
const TAIL_WINDOW: u64 = 8 * 1024 * 1024;

/// `bytes` as text: non-UTF-8 bytes become U+FFFD, a line past [`MAX_LINE`] is cut.
pub fn line_text(bytes: &[u8]) -> String {
    if bytes.len() > MAX_LINE {
        let mut s = String::from_utf8_lossy(&bytes[..MAX_LINE]).into_owned();
        s.push_str(&format!("… [cut {} bytes]", bytes.len() - MAX_LINE));
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Splits complete lines off the front of `buf` (a trailing partial line stays in it).
/// A partial line that grows past [`MAX_LINE`] is emitted cut, and the rest of it is
/// dropped as it arrives (`dropping` remembers that across calls).
pub fn split_lines(buf: &mut Vec<u8>, dropping: &mut bool, out: &mut Vec<String>) {
    let mut start = 0;
    while let Some(n) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + n];
        if !*dropping {
            out.push(line_text(line.strip_suffix(b"\r").unwrap_or(line)));
        }
        *dropping = false;
        start += n + 1;
    }
    buf.drain(..start);
    if buf.len() > MAX_LINE {
        if !*dropping {
            out.push(format!(
                "{}… [cut: longer than {MAX_LINE} bytes]",
                String::from_utf8_lossy(&buf[..MAX_LINE])
            ));
        }
        *dropping = true;
        buf.clear();
    }
}

/// The last `n` lines of `path` from byte `from` on, and the offset just past the last
/// complete line (where following goes on). A final line without its newline is
/// included only when `partial` is set.
pub fn last_lines(
    path: &Path,
    from: u64,
    n: usize,
    partial: bool,
) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let from = from.min(len);
    let start = from.max(len.saturating_sub(TAIL_WINDOW));
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(len - start).read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let end = start + complete as u64;
    // Reading from the middle of the file: the first line is probably partial.
    let mut body = &bytes[..];
    if start > from
        && let Some(i) = body.iter().position(|&b| b == b'\n')
    {
        body = &body[i + 1..];
    }
    let (full, rest) = body.split_at(body.len() - (bytes.len() - complete).min(body.len()));
    let mut lines: Vec<String> = full
        .split(|&b| b == b'\n')
        .filter(|_| !full.is_empty())
        .map(|l| line_text(l.strip_suffix(b"\r").unwrap_or(l)))
        .collect();
    // `split` yields an empty piece after the final newline.
    if full.ends_with(b"\n") {
        lines.pop();
    }
    if partial && !rest.is_empty() {
        lines.push(line_text(rest));
    }
    let skip = lines.len().saturating_sub(n);
    Ok((lines.split_off(skip), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_cuts_lines() {
        let mut buf = b"one\ntwo\r\nthr".to_vec();
        let mut out = Vec::new();
        let mut dropping = false;
        split_lines(&mut buf, &mut dropping, &mut out);
        assert_eq!(out, ["one", "two"]);
        assert_eq!(buf, b"thr");
        buf.extend(vec![b'x'; MAX_LINE]);
        split_lines(&mut buf, &mut dropping, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out[2].ends_with("bytes]"), "{}", &out[2][MAX_LINE..]);
        buf.extend(b"more of it\nnext\n");
        split_lines(&mut buf, &mut dropping, &mut out);
        assert_eq!(out[3], "next");
        let mut buf = b"\xff\xfeok\n".to_vec();
        split_lines(&mut buf, &mut dropping, &mut out);
        assert_eq!(out[4], "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn last_lines_of_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout.log");
        std::fs::write(&path, "a\nb\nc\npart").expect("write");
        let (lines, end) = last_lines(&path, 0, 2, false).expect("read");
        assert_eq!((lines, end), (vec!["b".to_string(), "c".to_string()], 6));
        let (lines, _) = last_lines(&path, 0, 10, true).expect("read");
        assert_eq!(lines, ["a", "b", "c", "part"]);
        let (lines, _) = last_lines(&path, 2, 10, false).expect("read");
        assert_eq!(lines, ["b", "c"]);
        let (lines, end) = last_lines(&path, 0, 0, false).expect("read");
        assert_eq!((lines.len(), end), (0, 6));
    }
}
