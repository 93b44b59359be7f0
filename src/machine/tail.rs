//! The end of a text: what an error or a report shows of a console
//! transcript or a log, in memory or in a file. Bytes are counted without
//! cutting a character; lines as [`str::lines`] splits them.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The last `max` bytes of `text`, not starting inside a character.
pub fn last_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The last `n` lines of `text`, joined with `\n`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `max` bytes of the file at `path` as text (invalid UTF-8
/// replaced), not starting inside a character; empty when it cannot be
/// read. Only the tail is read, however large the file.
pub fn last_bytes_of_file(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let cut = len > max;
    if cut && f.seek(SeekFrom::Start(len - max)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    // A seek into the middle of a character lands on continuation bytes
    // (10xxxxxx): skip them rather than show a replacement character.
    let start = if cut {
        buf.iter().take(3).take_while(|b| *b & 0xc0 == 0x80).count()
    } else {
        0
    };
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_tail_never_starts_inside_a_character() {
        assert_eq!(last_bytes("abc", 10), "abc");
        assert_eq!(last_bytes("abc", 2), "bc");
        assert_eq!(last_bytes("abc", 0), "");
        // "é" is two bytes: a tail of two would start inside it.
        assert_eq!(last_bytes("aéb", 2), "b");
        assert_eq!(last_bytes("aéb", 3), "éb");
    }

    #[test]
    fn a_file_tail_reads_the_end_and_never_starts_inside_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "aaaé\nlast").unwrap();
        assert_eq!(last_bytes_of_file(&p, 100), "aaaé\nlast");
        // Six bytes from the end start in the middle of "é".
        assert_eq!(last_bytes_of_file(&p, 6), "\nlast");
        assert_eq!(last_bytes_of_file(&p, 7), "é\nlast");
        assert_eq!(last_bytes_of_file(&dir.path().join("none"), 10), "");
    }

    #[test]
    fn a_line_tail_keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\r\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
        assert_eq!(last_lines("a\nb", 0), "");
    }
}
