//! Character classes and lower-casing exactly as CPython's `re` and `str.lower` apply them
//! (the tables in `tables.rs` are generated from CPython, see `UNICODE_VERSION`).

use std::cmp::Ordering;

use super::tables;

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                Ordering::Less
            } else if lo > c {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` matches `\w` of Python's `re` on str: a letter, a digit or other numeric
/// character, or `_` (combining marks are not word characters).
#[inline]
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        in_ranges(tables::WORD, c)
    }
}

/// Whether `c` matches `\s` of Python's `re` on str (`str.isspace`, which also splits
/// `str.split()`): includes the ASCII separators `\x1c`..`\x1f`.
#[inline]
pub fn is_space_char(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ')
    } else {
        in_ranges(tables::SPACE, c)
    }
}

fn is_cased(c: char) -> bool {
    c == 'Σ' || in_ranges(tables::CASED, c)
}

fn is_case_ignorable(c: char) -> bool {
    in_ranges(tables::CASE_IGNORABLE, c)
}

/// Whether the capital sigma at byte `i` of `s` ends a word (CPython's Final_Sigma rule).
fn final_sigma(s: &str, i: usize) -> bool {
    let before = s[..i].chars().rev().find(|&c| !is_case_ignorable(c));
    if !before.is_some_and(is_cased) {
        return false;
    }
    let after = s[i + 'Σ'.len_utf8()..]
        .chars()
        .find(|&c| !is_case_ignorable(c));
    !after.is_some_and(is_cased)
}

/// Appends `s` lower-cased as Python's `str.lower` does it (full case mapping, so the
/// length may change; final sigma in context) to `out`.
pub fn push_lowercase(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
        return;
    }
    for (i, c) in s.char_indices() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == 'Σ' {
            out.push(if final_sigma(s, i) { 'ς' } else { 'σ' });
        } else if let Ok(k) = tables::LOWER.binary_search_by_key(&(c as u32), |e| e.0) {
            let (_, start, end) = tables::LOWER[k];
            for &cp in &tables::LOWER_TEXT[usize::from(start)..usize::from(end)] {
                // the table holds only scalar values taken from Python strings
                out.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        } else {
            out.push(c);
        }
    }
}

/// Appends `s` to `out` with every run of two or more whitespace characters replaced by
/// one space (`re.sub(r"\s\s+", " ", s)`; a single whitespace character is kept as is).
pub fn push_collapsed_whitespace(s: &str, out: &mut String) {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_space_char(c) {
            let mut end = i + c.len_utf8();
            let mut run = 1;
            while let Some(&(j, d)) = chars.peek() {
                if !is_space_char(d) {
                    break;
                }
                end = j + d.len_utf8();
                run += 1;
                chars.next();
            }
            if run >= 2 {
                out.push(' ');
            } else {
                out.push_str(&s[i..end]);
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_paths_agree_with_the_tables() {
        for b in 0u8..128 {
            let c = char::from(b);
            assert_eq!(is_word_char(c), in_ranges(tables::WORD, c), "{b}");
            assert_eq!(is_space_char(c), in_ranges(tables::SPACE, c), "{b}");
        }
    }

    fn lower(s: &str) -> String {
        let mut out = String::new();
        push_lowercase(s, &mut out);
        out
    }

    #[test]
    fn lowercase_follows_python() {
        assert_eq!(lower("HeLLo"), "hello");
        assert_eq!(lower("ΟΔΟΣ ΣΑ"), "οδος σα");
        assert_eq!(lower("Σ"), "σ");
        assert_eq!(lower("ΟΔΟΣ.Σ"), "οδοσ.ς"); // '.' is case-ignorable, Σ is cased
        assert_eq!(lower("İ"), "i\u{307}");
        assert_eq!(lower("ÀÉ"), "àé");
    }

    #[test]
    fn whitespace_runs_collapse_to_one_space() {
        let mut out = String::new();
        push_collapsed_whitespace("a\tb \n c\u{2003}\u{2003}d", &mut out);
        assert_eq!(out, "a\tb c d");
    }

    #[test]
    fn word_chars_follow_python_re() {
        assert!(is_word_char('é'));
        assert!(is_word_char('²')); // numeric (No) counts in Python's \w
        assert!(!is_word_char('\u{301}')); // combining marks do not
        assert!(is_space_char('\u{1c}'));
        assert!(!is_space_char('\u{200b}'));
    }
}
