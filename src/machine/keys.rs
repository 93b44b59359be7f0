//! Keys for QMP `send-key`: key names as people write them
//! (`"ctrl-alt-delete"`, `"ret"`) and the keys that type a character on a
//! US keyboard, as QEMU's `QKeyCode` names them.

/// The QKeyCodes of a combination such as `"ctrl-alt-delete"`: its parts,
/// split on `-`. A part is a QKeyCode (`ret`, `f1`, `a`) or one of the
/// aliases people write (`enter`, `esc`, `del`, `space`, `pgup`…).
/// Errors name the part that is not a key.
pub fn combination(keys: &str) -> Result<Vec<String>, String> {
    if keys.is_empty() {
        return Err("no key given".into());
    }
    keys.split('-')
        .map(|k| {
            let k = k.trim().to_ascii_lowercase();
            let code = match k.as_str() {
                "enter" | "return" => "ret",
                "escape" => "esc",
                "del" => "delete",
                "space" => "spc",
                "pgup" | "pageup" => "pgup",
                "pgdn" | "pagedown" => "pgdn",
                "control" => "ctrl",
                "backspace" => "backspace",
                k if is_qkeycode(k) => k,
                _ => return Err(format!("{k:?} in {keys:?} is not a key")),
            };
            Ok(code.to_string())
        })
        .collect()
}

/// Whether `k` looks like a QKeyCode QEMU knows: letters, digits, function
/// keys, and the named keys below.
fn is_qkeycode(k: &str) -> bool {
    const NAMED: &[&str] = &[
        "shift",
        "shift_r",
        "alt",
        "alt_r",
        "ctrl",
        "ctrl_r",
        "menu",
        "esc",
        "minus",
        "equal",
        "backspace",
        "tab",
        "bracket_left",
        "bracket_right",
        "ret",
        "semicolon",
        "apostrophe",
        "grave_accent",
        "backslash",
        "comma",
        "dot",
        "slash",
        "asterisk",
        "spc",
        "caps_lock",
        "num_lock",
        "scroll_lock",
        "print",
        "sysrq",
        "home",
        "pgup",
        "pgdn",
        "end",
        "left",
        "up",
        "down",
        "right",
        "insert",
        "delete",
        "meta_l",
        "meta_r",
        "pause",
        "less",
        "kp_enter",
        "kp_add",
        "kp_subtract",
        "kp_multiply",
        "kp_divide",
        "kp_decimal",
    ];
    let f = k
        .strip_prefix('f')
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=24).contains(&n));
    let kp = k
        .strip_prefix("kp_")
        .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit());
    (k.len() == 1 && k.as_bytes()[0].is_ascii_alphanumeric()) || f || kp || NAMED.contains(&k)
}

/// The keys pressed together to type `c` on a US keyboard, or `None`.
pub fn for_char(c: char) -> Option<Vec<&'static str>> {
    const PLAIN: &[(char, &str)] = &[
        (' ', "spc"),
        ('\n', "ret"),
        ('\t', "tab"),
        ('-', "minus"),
        ('=', "equal"),
        ('[', "bracket_left"),
        (']', "bracket_right"),
        (';', "semicolon"),
        ('\'', "apostrophe"),
        ('`', "grave_accent"),
        ('\\', "backslash"),
        (',', "comma"),
        ('.', "dot"),
        ('/', "slash"),
    ];
    const SHIFTED: &[(char, &str)] = &[
        ('!', "1"),
        ('@', "2"),
        ('#', "3"),
        ('$', "4"),
        ('%', "5"),
        ('^', "6"),
        ('&', "7"),
        ('*', "8"),
        ('(', "9"),
        (')', "0"),
        ('_', "minus"),
        ('+', "equal"),
        ('{', "bracket_left"),
        ('}', "bracket_right"),
        (':', "semicolon"),
        ('"', "apostrophe"),
        ('~', "grave_accent"),
        ('|', "backslash"),
        ('<', "comma"),
        ('>', "dot"),
        ('?', "slash"),
    ];
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if c.is_ascii_lowercase() {
        return Some(vec![LETTERS[(c as u8 - b'a') as usize]]);
    }
    if c.is_ascii_uppercase() {
        return Some(vec!["shift", LETTERS[(c as u8 - b'A') as usize]]);
    }
    if c.is_ascii_digit() {
        return Some(vec![DIGITS[(c as u8 - b'0') as usize]]);
    }
    if let Some((_, k)) = PLAIN.iter().find(|(p, _)| *p == c) {
        return Some(vec![k]);
    }
    SHIFTED
        .iter()
        .find(|(s, _)| *s == c)
        .map(|(_, k)| vec!["shift", *k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_split_on_dashes_and_know_aliases() {
        assert_eq!(
            combination("ctrl-alt-delete").unwrap(),
            ["ctrl", "alt", "delete"]
        );
        assert_eq!(combination("Enter").unwrap(), ["ret"]);
        assert_eq!(combination("shift-f12").unwrap(), ["shift", "f12"]);
        assert_eq!(combination("kp_5").unwrap(), ["kp_5"]);
        let e = combination("ctrl-hyper").unwrap_err();
        assert_eq!(e, "\"hyper\" in \"ctrl-hyper\" is not a key");
        assert!(combination("").is_err());
        assert!(combination("f25").is_err());
    }

    #[test]
    fn characters_are_typed_with_shift_where_a_us_keyboard_needs_it() {
        assert_eq!(for_char('a'), Some(vec!["a"]));
        assert_eq!(for_char('Q'), Some(vec!["shift", "q"]));
        assert_eq!(for_char('7'), Some(vec!["7"]));
        assert_eq!(for_char('&'), Some(vec!["shift", "7"]));
        assert_eq!(for_char('\n'), Some(vec!["ret"]));
        assert_eq!(for_char(' '), Some(vec!["spc"]));
        assert_eq!(for_char('|'), Some(vec!["shift", "backslash"]));
        assert_eq!(for_char('é'), None);
    }
}
