//! The end of a text: what an error or a report shows of a console
//! transcript or a log. Bytes are counted without cutting a character;
//! lines as [`str::lines`] splits them.

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
    fn a_line_tail_keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\r\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
        assert_eq!(last_lines("a\nb", 0), "");
    }
}
