//! Errors as one line of text, for messages and logs.

/// `outer: inner: innermost`, each message once (HTTP clients often repeat a cause in the
/// message that wraps it).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = e.source();
    }
    text
}
