//! Word n-gram vocabularies without a string per n-gram.
//!
//! Every term is a node of a trie: a word, or an n-gram `(prefix (n-1)-gram, last word)`.
//! Chunks of documents intern their words by string and their n-grams by a pair of node ids
//! (a `u64` key); the chunks' words are then merged by string, and each n-gram level in
//! hash-sharded parallel by the pair of global ids. Strings are only built for the terms
//! kept in the vocabulary.
//!
//! The order of the vocabulary is the order of the joined strings: tokens are runs of `\w`
//! characters, all above the space that joins them, so comparing two joined n-grams is
//! comparing their token sequences lexicographically (a sequence sorts before its
//! extensions). That is the preorder of the trie with each node's children sorted by the
//! rank of their last word.

use std::collections::hash_map::Entry;

use rayon::prelude::*;

use crate::{Error, Result};

use super::tokenize::{Analyzer, Scratch};
use super::vocab::{chunk_ranges, Counts, FxMap, Merged};

/// No node (the prefix of a word).
const NONE: u32 = u32::MAX;

/// Number of hash shards the n-grams of one level are merged in (the output does not
/// depend on it).
const SHARDS: usize = 64;

/// The nodes of a chunk of documents (local ids in order of first appearance) and the
/// documents' counts over them.
struct Chunk {
    /// The words, by word index.
    words: Vec<Box<str>>,
    /// The node of each word.
    word_node: Vec<u32>,
    /// Per node: its prefix node, `NONE` for a word.
    parent: Vec<u32>,
    /// Per node: its last word's node (a word: its word index).
    last: Vec<u32>,
    /// Per node: its number of words.
    level: Vec<u32>,
    df: Vec<u64>,
    tf: Vec<u64>,
    counts: Counts,
}

fn new_id(n_nodes: usize) -> Result<u32> {
    u32::try_from(n_nodes)
        .ok()
        .filter(|&id| id != NONE)
        .ok_or_else(|| Error::invalid("more than 2^32 distinct terms"))
}

fn count_chunk(docs: &[&str], a: &Analyzer) -> Result<Chunk> {
    let mut word_map: FxMap<Box<str>, u32> = FxMap::default();
    let mut pair_map: FxMap<u64, u32> = FxMap::default();
    let (mut parent, mut last, mut level) = (Vec::new(), Vec::new(), Vec::new());
    let mut word_node: Vec<u32> = Vec::new();
    let mut sc = Scratch::default();
    let (mut toks, mut cur, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = Counts::default();
    counts.indptr.push(0);
    for doc in docs {
        ids.clear();
        toks.clear();
        let (text, spans) = a.words(doc, &mut sc);
        for &(s, e) in spans {
            let w = &text[s..e];
            let id = match word_map.get(w) {
                Some(&id) => id,
                None => {
                    let id = new_id(parent.len())?;
                    word_map.insert(w.into(), id);
                    parent.push(NONE);
                    last.push(word_node.len() as u32);
                    level.push(1);
                    word_node.push(id);
                    id
                }
            };
            toks.push(id);
        }
        if a.min_n == 1 {
            ids.extend_from_slice(&toks);
        }
        cur.clear();
        cur.extend_from_slice(&toks);
        for n in 2..=a.max_n.min(toks.len()) {
            for i in 0..=toks.len() - n {
                let (p, w) = (cur[i], toks[i + n - 1]);
                let id = match pair_map.entry((u64::from(p) << 32) | u64::from(w)) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        let id = new_id(parent.len())?;
                        e.insert(id);
                        parent.push(p);
                        last.push(w);
                        level.push(n as u32); // n <= the document's tokens
                        id
                    }
                };
                cur[i] = id;
                if n >= a.min_n {
                    ids.push(id);
                }
            }
        }
        counts.push_doc(&mut ids);
    }
    drop(pair_map);
    let mut words: Vec<Box<str>> = vec![Box::default(); word_node.len()];
    for (w, node) in word_map {
        words[last[node as usize] as usize] = w;
    }
    let mut df = vec![0u64; parent.len()];
    let mut tf = vec![0u64; parent.len()];
    for (&id, &c) in counts.ids.iter().zip(&counts.counts) {
        df[id as usize] += 1;
        tf[id as usize] += u64::from(c);
    }
    Ok(Chunk {
        words,
        word_node,
        parent,
        last,
        level,
        df,
        tf,
        counts,
    })
}

/// The shard of an n-gram key (high bits of a multiplicative hash, unrelated to the bits the
/// shard's hash map uses).
#[inline]
fn shard(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros())) as usize
}

/// The n-grams of one level merged in one shard: their keys, frequencies, and per chunk the
/// shard-local id of each of the chunk's entries in this shard.
struct Shard {
    keys: Vec<u64>,
    df: Vec<u64>,
    tf: Vec<u64>,
    ids: Vec<Vec<u32>>,
}

/// Counts the word n-grams of `docs` in `parts` parallel chunks and merges them; returns the
/// merged counts and the string of a global term id.
pub(super) fn fit(
    docs: &[&str],
    a: &Analyzer,
    parts: usize,
) -> Result<(Merged, impl Fn(u32) -> Box<str> + Sync)> {
    let mut chunks: Vec<Chunk> = chunk_ranges(docs.len(), parts)
        .into_par_iter()
        .map(|r| count_chunk(&docs[r], a))
        .collect::<Result<_>>()?;

    // words: merged by string; global word ids are the first global node ids
    let mut chunk_words: Vec<Vec<Box<str>>> = chunks
        .iter_mut()
        .map(|c| std::mem::take(&mut c.words))
        .collect();
    let mut local_to_global: Vec<Vec<u32>> =
        chunks.iter().map(|c| vec![NONE; c.parent.len()]).collect();
    let mut word_ids: FxMap<&str, u32> = FxMap::default();
    let mut origin: Vec<(usize, usize)> = Vec::new(); // (chunk, word index) of each word
    let (mut parent, mut last, mut level) = (Vec::new(), Vec::new(), Vec::new());
    let (mut df, mut tf): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for (c, ((ch, map), cw)) in chunks
        .iter()
        .zip(&mut local_to_global)
        .zip(&chunk_words)
        .enumerate()
    {
        for (i, (w, &node)) in cw.iter().zip(&ch.word_node).enumerate() {
            let g = *word_ids.entry(&**w).or_insert_with(|| {
                let g = origin.len() as u32;
                origin.push((c, i));
                parent.push(NONE);
                last.push(g);
                level.push(1);
                df.push(0);
                tf.push(0);
                g
            });
            df[g as usize] += ch.df[node as usize];
            tf[g as usize] += ch.tf[node as usize];
            map[node as usize] = g;
        }
    }
    drop(word_ids);
    new_id(origin.len())?;
    let words: Vec<Box<str>> = origin
        .iter()
        .map(|&(c, i)| std::mem::take(&mut chunk_words[c][i]))
        .collect();
    drop(chunk_words);
    let n_words = words.len();

    // n-grams, level by level (a level's prefixes have global ids from the level before)
    for n in 2..=a.max_n {
        let buckets: Vec<Vec<Vec<(u64, u32)>>> = chunks
            .par_iter()
            .zip(&local_to_global)
            .map(|(ch, map)| {
                let mut b = vec![Vec::new(); SHARDS];
                for node in 0..ch.parent.len() {
                    if ch.level[node] as usize == n {
                        let p = map[ch.parent[node] as usize];
                        let w = map[ch.last[node] as usize];
                        let key = (u64::from(p) << 32) | u64::from(w);
                        b[shard(key)].push((key, node as u32));
                    }
                }
                b
            })
            .collect();
        if buckets.iter().all(|b| b.iter().all(Vec::is_empty)) {
            break; // no n-gram this long, nor any longer
        }
        let shards: Vec<Shard> = (0..SHARDS)
            .into_par_iter()
            .map(|s| {
                let mut map: FxMap<u64, u32> = FxMap::default();
                let mut sh = Shard {
                    keys: Vec::new(),
                    df: Vec::new(),
                    tf: Vec::new(),
                    ids: Vec::with_capacity(chunks.len()),
                };
                for (ch, b) in chunks.iter().zip(&buckets) {
                    let mut ids = Vec::with_capacity(b[s].len());
                    for &(key, node) in &b[s] {
                        let id = *map.entry(key).or_insert_with(|| {
                            sh.keys.push(key);
                            sh.df.push(0);
                            sh.tf.push(0);
                            (sh.keys.len() - 1) as u32
                        });
                        sh.df[id as usize] += ch.df[node as usize];
                        sh.tf[id as usize] += ch.tf[node as usize];
                        ids.push(id);
                    }
                    sh.ids.push(ids);
                }
                sh
            })
            .collect();
        let mut offset = Vec::with_capacity(SHARDS);
        for sh in &shards {
            offset.push(new_id(parent.len())?);
            new_id(parent.len() + sh.keys.len())?;
            parent.extend(sh.keys.iter().map(|&k| (k >> 32) as u32));
            last.extend(sh.keys.iter().map(|&k| k as u32));
            level.resize(parent.len(), n as u32);
            df.extend_from_slice(&sh.df);
            tf.extend_from_slice(&sh.tf);
        }
        local_to_global
            .par_iter_mut()
            .zip(&buckets)
            .enumerate()
            .for_each(|(c, (map, b))| {
                for (s, entries) in b.iter().enumerate() {
                    for (&(_, node), &id) in entries.iter().zip(&shards[s].ids[c]) {
                        map[node as usize] = offset[s] + id;
                    }
                }
            });
    }

    // sorted order: the trie's preorder, children by the rank of their last word
    let mut by_str: Vec<u32> = (0..n_words as u32).collect();
    by_str.par_sort_unstable_by(|&x, &y| words[x as usize].cmp(&words[y as usize]));
    let mut rank = vec![0u32; n_words];
    for (r, &w) in by_str.iter().enumerate() {
        rank[w as usize] = r as u32;
    }
    let n_nodes = parent.len();
    let mut kids: Vec<(u64, u32)> = (n_words..n_nodes)
        .into_par_iter()
        .map(|g| {
            let key = (u64::from(parent[g]) << 32) | u64::from(rank[last[g] as usize]);
            (key, g as u32)
        })
        .collect();
    kids.par_sort_unstable();
    let mut start = vec![0usize; n_nodes + 1];
    for &(key, _) in &kids {
        start[(key >> 32) as usize + 1] += 1;
    }
    for i in 0..n_nodes {
        start[i + 1] += start[i];
    }
    let mut order = Vec::with_capacity(n_nodes);
    let mut stack: Vec<u32> = by_str.iter().rev().copied().collect();
    while let Some(g) = stack.pop() {
        let g = g as usize;
        if level[g] as usize >= a.min_n {
            order.push(g as u32);
        }
        stack.extend(kids[start[g]..start[g + 1]].iter().rev().map(|e| e.1));
    }
    drop(kids);

    let counts = chunks.into_iter().map(|c| c.counts).collect();
    let merged = Merged {
        df,
        tf,
        order,
        counts,
        local_to_global,
    };
    let term = move |g: u32| -> Box<str> {
        let mut seq = Vec::with_capacity(level[g as usize] as usize);
        let mut x = g;
        loop {
            seq.push(last[x as usize]);
            x = parent[x as usize];
            if x == NONE {
                break;
            }
        }
        let len = seq.iter().map(|&w| words[w as usize].len()).sum::<usize>() + seq.len() - 1;
        let mut s = String::with_capacity(len);
        for (i, &w) in seq.iter().rev().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&words[w as usize]);
        }
        s.into_boxed_str()
    };
    Ok((merged, term))
}
