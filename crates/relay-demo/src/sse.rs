//! Server-Sent Events framing (WHATWG HTML §9.2): events with `id:`, `event:`, one `data:` line
//! per line of payload, and — on a stream's first event — `retry:`. The retry field rides on an
//! event rather than in a block of its own because several client parsers drop fields of blocks
//! that dispatch no event. Framing is written here rather than taken
//! from axum so the service can count the exact bytes it transmits.

use bytes::Bytes;

/// Reconnection delay advertised at the start of every stream.
pub const RETRY_MS: u64 = 2000;

/// One event block: `retry` (if given), `id`, `event` name and `data` (one `data:` line per line).
pub fn event_block(retry_ms: Option<u64>, id: u64, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + 48);
    if let Some(retry_ms) = retry_ms {
        out.push_str("retry: ");
        out.push_str(&retry_ms.to_string());
        out.push('\n');
    }
    out.push_str("id: ");
    out.push_str(&id.to_string());
    out.push_str("\nevent: ");
    out.push_str(event);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_event_stream_grammar() {
        assert_eq!(
            &event_block(Some(2000), 1, "result", "{\"a\":1}")[..],
            b"retry: 2000\nid: 1\nevent: result\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &event_block(None, 1, "note", "two\nlines")[..],
            b"id: 1\nevent: note\ndata: two\ndata: lines\n\n"
        );
    }
}
