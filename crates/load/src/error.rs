//! What stops a burst or a probe run before it can report. A request that fails is not an
//! error here: it is a [`crate::RequestRecord`] with an [`crate::ErrorKind`].

/// Why a burst or a probe run could not be carried out. Messages say what to fix and never
/// contain a token or a marker.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The scenario or probe spec cannot be run as given.
    #[error("the load scenario is invalid: {0}")]
    InvalidScenario(String),
    /// A target URL cannot be used.
    #[error("{url:?} is not a usable target: {reason}")]
    InvalidUrl {
        /// The URL as given (URLs carry no secrets here: tokens travel in headers).
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A header name or value from the scenario is not valid HTTP.
    #[error("header {name:?} is not valid HTTP: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong (the value is not repeated: it may be a credential).
        reason: String,
    },
    /// TLS could not be set up for an `https://` target.
    #[error("cannot set up TLS for {url}: {reason}")]
    Tls {
        /// The target.
        url: String,
        /// The cause.
        reason: String,
    },
    /// A load worker stopped abnormally (a bug: please report it).
    #[error("a load worker stopped abnormally: {0}")]
    Worker(String),
}
