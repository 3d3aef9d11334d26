//! Analyzers: a document to its terms (word n-grams, character n-grams), as scikit-learn's
//! `CountVectorizer.build_analyzer()` produces them with the default preprocessing.

use crate::{Error, Result};

use super::normalize::{is_space_char, is_word_char, push_collapsed_whitespace, push_lowercase};

/// What a term is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalyzerKind {
    /// Word n-grams of the tokens of `(?u)\b\w\w+\b`, joined by one space.
    Word,
    /// Character n-grams of the text (whitespace runs collapsed to one space).
    Char,
    /// Character n-grams inside words, each word padded with one space on both sides.
    CharWb,
}

impl AnalyzerKind {
    /// Parses scikit-learn's name: `"word"`, `"char"` or `"char_wb"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "word" => Ok(Self::Word),
            "char" => Ok(Self::Char),
            "char_wb" => Ok(Self::CharWb),
            _ => Err(Error::invalid(format!(
                "analyzer must be 'word', 'char' or 'char_wb', got {name:?}"
            ))),
        }
    }

    /// scikit-learn's name of the analyzer.
    pub fn name(self) -> &'static str {
        match self {
            Self::Word => "word",
            Self::Char => "char",
            Self::CharWb => "char_wb",
        }
    }
}

/// How documents become terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Analyzer {
    /// Word or character n-grams.
    pub kind: AnalyzerKind,
    /// Smallest n of the n-grams (at least 1).
    pub min_n: usize,
    /// Largest n of the n-grams (at least `min_n`).
    pub max_n: usize,
    /// Lower-case the text first (Python's `str.lower`).
    pub lowercase: bool,
}

impl Analyzer {
    /// Checks the n-gram range.
    pub fn validate(&self) -> Result<()> {
        if self.min_n < 1 || self.min_n > self.max_n {
            return Err(Error::invalid(format!(
                "ngram_range must be (min_n, max_n) with 1 <= min_n <= max_n, got ({}, {})",
                self.min_n, self.max_n
            )));
        }
        Ok(())
    }
}

/// Reusable buffers of one worker: analyzing a document allocates nothing once they have
/// grown to the largest document.
#[derive(Default)]
pub struct Scratch {
    lower: String,
    text: String,
    term: String,
    tokens: Vec<(usize, usize)>,
    bounds: Vec<usize>,
}

/// The `(start, end)` byte ranges of the tokens of `s`: maximal runs of word characters that
/// are at least two characters long (`re.findall(r"(?u)\b\w\w+\b", s)`).
pub fn word_tokens(s: &str, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let bytes = s.as_bytes();
    let mut start = usize::MAX; // no open token
    let mut len = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (word, width) = if b < 0x80 {
            (ASCII_WORD[usize::from(b)], 1)
        } else {
            // i is at a char boundary: decode one char
            let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            (is_word_char(c), c.len_utf8())
        };
        if word {
            if start == usize::MAX {
                start = i;
                len = 0;
            }
            len += 1;
        } else if start != usize::MAX {
            if len >= 2 {
                out.push((start, i));
            }
            start = usize::MAX;
        }
        i += width;
    }
    if start != usize::MAX && len >= 2 {
        out.push((start, s.len()));
    }
}

/// `\w` on ASCII bytes.
static ASCII_WORD: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

impl Analyzer {
    /// The text of `doc` as the word analyzer sees it (lower-cased when `lowercase`) and the
    /// byte ranges of its tokens in it.
    pub(crate) fn words<'a>(
        &self,
        doc: &'a str,
        sc: &'a mut Scratch,
    ) -> (&'a str, &'a [(usize, usize)]) {
        let text: &str = if self.lowercase {
            sc.lower.clear();
            push_lowercase(doc, &mut sc.lower);
            &sc.lower
        } else {
            doc
        };
        word_tokens(text, &mut sc.tokens);
        (text, &sc.tokens)
    }

    /// Calls `emit` with every term of `doc`, with repetitions (the order is not
    /// scikit-learn's, the multiset is).
    pub fn analyze(&self, doc: &str, sc: &mut Scratch, mut emit: impl FnMut(&str)) {
        let text: &str = if self.lowercase {
            sc.lower.clear();
            push_lowercase(doc, &mut sc.lower);
            &sc.lower
        } else {
            doc
        };
        match self.kind {
            AnalyzerKind::Word => {
                word_tokens(text, &mut sc.tokens);
                let toks = &sc.tokens;
                if self.min_n == 1 {
                    for &(a, b) in toks {
                        emit(&text[a..b]);
                    }
                }
                for n in self.min_n.max(2)..=self.max_n.min(toks.len()) {
                    for w in toks.windows(n) {
                        sc.term.clear();
                        for (j, &(a, b)) in w.iter().enumerate() {
                            if j > 0 {
                                sc.term.push(' ');
                            }
                            sc.term.push_str(&text[a..b]);
                        }
                        emit(&sc.term);
                    }
                }
            }
            AnalyzerKind::Char => {
                sc.text.clear();
                push_collapsed_whitespace(text, &mut sc.text);
                let t = &sc.text;
                sc.bounds.clear();
                sc.bounds.extend(t.char_indices().map(|(i, _)| i));
                sc.bounds.push(t.len());
                let n_chars = sc.bounds.len() - 1;
                for n in self.min_n..=self.max_n.min(n_chars) {
                    for i in 0..=(n_chars - n) {
                        emit(&t[sc.bounds[i]..sc.bounds[i + n]]);
                    }
                }
            }
            AnalyzerKind::CharWb => {
                sc.text.clear();
                push_collapsed_whitespace(text, &mut sc.text);
                let t = &sc.text;
                for word in t.split(is_space_char).filter(|w| !w.is_empty()) {
                    sc.term.clear();
                    sc.term.push(' ');
                    sc.term.push_str(word);
                    sc.term.push(' ');
                    let w = &sc.term;
                    sc.bounds.clear();
                    sc.bounds.extend(w.char_indices().map(|(i, _)| i));
                    sc.bounds.push(w.len());
                    let w_len = sc.bounds.len() - 1;
                    for n in self.min_n..=self.max_n {
                        if n >= w_len {
                            emit(w); // a short word counts once, whole
                            break;
                        }
                        for i in 0..=(w_len - n) {
                            emit(&w[sc.bounds[i]..sc.bounds[i + n]]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(kind: AnalyzerKind, n: (usize, usize), doc: &str) -> Vec<String> {
        let a = Analyzer {
            kind,
            min_n: n.0,
            max_n: n.1,
            lowercase: true,
        };
        let mut out = Vec::new();
        a.analyze(doc, &mut Scratch::default(), |t| out.push(t.to_string()));
        out.sort();
        out
    }

    #[test]
    fn words_and_word_ngrams() {
        assert_eq!(
            terms(AnalyzerKind::Word, (1, 2), "The cat, a CAT!"),
            ["cat", "cat", "cat cat", "the", "the cat"]
        );
        assert!(terms(AnalyzerKind::Word, (3, 5), "one two").is_empty());
    }

    #[test]
    fn char_ngrams() {
        assert_eq!(
            terms(AnalyzerKind::Char, (2, 2), "ab  c"),
            [" c", "ab", "b "]
        );
        assert_eq!(
            terms(AnalyzerKind::Char, (4, 9), "abc"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn char_wb_ngrams() {
        assert_eq!(terms(AnalyzerKind::CharWb, (3, 3), "ab"), [" ab", "ab "]);
        // a word shorter than n counts once, whole, and stops larger n
        assert_eq!(terms(AnalyzerKind::CharWb, (4, 6), "a"), [" a "]);
    }
}
