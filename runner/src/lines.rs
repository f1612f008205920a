//! Splitting a byte stream into lines for `stdout`/`stderr` events.

use channel3::MAX_LINE;

/// Accumulates bytes and hands out complete lines (with their `\n`), splitting lines longer than
/// [`MAX_LINE`] bytes; [`LineSplitter::finish`] flushes a final partial line.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        while !chunk.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &chunk[..chunk.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.flush_with(&window[..=i], &mut emit);
                    chunk = &chunk[i + 1..];
                }
                None if window.len() == room => {
                    self.flush_with(window, &mut emit);
                    chunk = &chunk[room..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    chunk = &[];
                }
            }
        }
    }

    fn flush_with(&mut self, tail: &[u8], emit: &mut impl FnMut(&[u8])) {
        if self.pending.is_empty() {
            emit(tail);
        } else {
            self.pending.extend_from_slice(tail);
            emit(&self.pending);
            self.pending.clear();
        }
    }

    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l.to_vec()));
        }
        s.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_keep_newlines_and_partial_tail_is_flushed() {
        assert_eq!(
            split(&[b"a\nb", b"c\nd"]),
            vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"d".to_vec()]
        );
    }

    #[test]
    fn long_lines_are_split_at_the_cap() {
        let big = vec![b'x'; MAX_LINE * 2 + 3];
        let out = split(&[&big[..100], &big[100..], b"\n"]);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 4]
        );
    }
}
