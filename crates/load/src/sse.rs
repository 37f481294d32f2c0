//! Incremental Server-Sent Events framing (WHATWG HTML §9.2.6): where each event ends, whether
//! it carries data, and whether the terminal event arrived — fed chunk by chunk, without keeping
//! the stream and without allocating per chunk.
//!
//! An event is *dispatched* at a blank line when its block had at least one `data` field (a
//! block without data — comments, a lone `event:` or `retry:` — dispatches nothing). Lines end
//! at `\n`, `\r\n` or `\r`, and every boundary may fall between two chunks.

/// Longest event name kept for comparison with the terminal name; longer names never match.
const MAX_EVENT_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the current line seen yet.
    Start,
    /// Reading the field name; `len` bytes so far, kept in `field`.
    Field { len: usize },
    /// Reading an `event` field's value; `skip_space` until its first byte.
    EventValue { skip_space: bool },
    /// The rest of the line does not matter.
    Skip,
}

/// Tracks event boundaries in a `text/event-stream` body.
#[derive(Debug, Clone)]
pub(crate) struct SseScanner {
    line: Line,
    field: [u8; 5],
    /// The previous byte was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    block_has_data: bool,
    block_name: Vec<u8>,
    name_overflow: bool,
    terminal: Vec<u8>,
    /// Dispatched events (blocks with data).
    pub events: u32,
    /// An event named like the terminal event was dispatched.
    pub terminal_seen: bool,
}

impl SseScanner {
    /// A scanner that reports `terminal` (such as `done`) as the stream's terminal event. An
    /// empty name never matches.
    pub fn new(terminal: &str) -> Self {
        SseScanner {
            line: Line::Start,
            field: [0; 5],
            after_cr: false,
            block_has_data: false,
            block_name: Vec::with_capacity(16),
            name_overflow: false,
            terminal: terminal.as_bytes().to_vec(),
            events: 0,
            terminal_seen: false,
        }
    }

    /// Feeds the next chunk; returns how many events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> u32 {
        let before = self.events;
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line();
                }
                _ => self.byte(b),
            }
        }
        self.events - before
    }

    fn byte(&mut self, b: u8) {
        match self.line {
            Line::Start | Line::Field { .. } => {
                let len = match self.line {
                    Line::Field { len } => len,
                    _ => 0,
                };
                if b == b':' {
                    self.line = self.field_ended(len);
                } else if len < self.field.len() {
                    self.field[len] = b;
                    self.line = Line::Field { len: len + 1 };
                } else {
                    // Longer than any field we care about.
                    self.line = Line::Skip;
                }
            }
            Line::EventValue { skip_space } => {
                if skip_space && b == b' ' {
                    self.line = Line::EventValue { skip_space: false };
                    return;
                }
                self.line = Line::EventValue { skip_space: false };
                if self.block_name.len() < MAX_EVENT_NAME {
                    self.block_name.push(b);
                } else {
                    self.name_overflow = true;
                }
            }
            Line::Skip => {}
        }
    }

    /// The field name (`len` bytes of `field`) ended at a colon: what to do with the value.
    fn field_ended(&mut self, len: usize) -> Line {
        match &self.field[..len] {
            b"data" => {
                self.block_has_data = true;
                Line::Skip
            }
            b"event" => {
                self.block_name.clear();
                self.name_overflow = false;
                Line::EventValue { skip_space: true }
            }
            // A comment (empty field name) or a field we do not need.
            _ => Line::Skip,
        }
    }

    fn end_line(&mut self) {
        match self.line {
            Line::Start => self.dispatch(),
            // A field name without a colon: the whole line is the name, the value is empty.
            Line::Field { len } => {
                let _ = self.field_ended(len);
            }
            Line::EventValue { .. } | Line::Skip => {}
        }
        self.line = Line::Start;
    }

    fn dispatch(&mut self) {
        if self.block_has_data {
            self.events += 1;
            if !self.terminal.is_empty() && !self.name_overflow && self.block_name == self.terminal
            {
                self.terminal_seen = true;
            }
        }
        self.block_has_data = false;
        self.block_name.clear();
        self.name_overflow = false;
    }
}

/// The `data` payloads of every dispatched event of a complete SSE body, in order. For
/// inspecting small bodies (probes), not for the measured hot path.
pub(crate) fn event_payloads(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut data: Option<String> = None;
    for line in body
        .split(['\n'])
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
    {
        if line.is_empty() {
            if let Some(d) = data.take() {
                out.push(d);
            }
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` split at every possible point and in single bytes; the answer must not
    /// depend on where chunks end.
    fn check(body: &str, events: u32, terminal: bool) {
        let bytes = body.as_bytes();
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![bytes]];
        for at in 0..=bytes.len() {
            splits.push(vec![&bytes[..at], &bytes[at..]]);
        }
        splits.push(bytes.chunks(1).collect());
        for chunks in splits {
            let mut s = SseScanner::new("done");
            let fed: u32 = chunks.iter().map(|c| s.feed(c)).sum();
            assert_eq!(
                (fed, s.events, s.terminal_seen),
                (events, events, terminal),
                "{body:?}"
            );
        }
    }

    #[test]
    fn events_are_counted_where_they_complete() {
        let table: &[(&str, u32, bool)] = &[
            ("", 0, false),
            ("data: x", 0, false),
            ("data: x\n", 0, false),
            ("data: x\n\n", 1, false),
            ("data: x\r\n\r\n", 1, false),
            ("data: x\r\r", 1, false),
            ("data\n\n", 1, false),
            ("data:\n\n", 1, false),
            (": comment\n\n", 0, false),
            ("event: ping\n\n", 0, false),
            ("retry: 2000\n\n", 0, false),
            (
                "event: result\ndata: {}\n\nevent: done\ndata: {}\n\n",
                2,
                true,
            ),
            ("event:done\ndata: {}\n\n", 1, true),
            ("event: done\n\n", 0, false),
            ("event: done\ndata: {}\n", 0, false),
            ("event: done2\ndata: {}\n\n", 1, false),
            ("event: don\ndata: {}\n\n", 1, false),
            ("event: done\nevent: result\ndata: 1\n\n", 1, false),
            (
                "retry: 2000\nid: 1\nevent: result\ndata: {\"a\":1}\n\n",
                1,
                false,
            ),
            ("datum: x\n\n", 0, false),
            ("dat: x\n\n", 0, false),
            ("data: a\ndata: b\n\n\n\n", 1, false),
        ];
        for &(body, events, terminal) in table {
            check(body, events, terminal);
        }
    }

    #[test]
    fn an_empty_terminal_name_never_matches() {
        let mut s = SseScanner::new("");
        s.feed(b"data: x\n\n");
        assert_eq!((s.events, s.terminal_seen), (1, false));
    }

    #[test]
    fn payloads_are_reassembled() {
        let body = "retry: 1\nid: 1\nevent: result\ndata: {\"a\":1}\n\n: c\n\ndata: one\r\ndata: two\r\n\r\nevent: x\n\n";
        assert_eq!(event_payloads(body), vec!["{\"a\":1}", "one\ntwo"]);
    }
}
