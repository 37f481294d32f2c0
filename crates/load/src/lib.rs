//! `canary-load`: the load burst, the SSE-aware client and the tenant-isolation probes.
#![forbid(unsafe_code)]
