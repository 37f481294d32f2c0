//! `canary-proxy`: the embedded weighted reverse proxy and its admin API.
#![forbid(unsafe_code)]
