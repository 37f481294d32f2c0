//! The PostgreSQL store's address as people see it: the URL with its password replaced by
//! `***`, in every message and every `Debug`.

use std::fmt;

/// A `postgres://` URL with any password (in the user part, or a `password=` parameter)
/// replaced by `***`. What errors and logs show; the URL itself stays in a
/// [`canary_core::Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Redacts `url`. Anything that does not look like a URL is shown as `***` whole: it may be
    /// a password pasted into the wrong place.
    pub fn new(url: &str) -> RedactedUrl {
        let Some((scheme, rest)) = url.split_once("://") else {
            return RedactedUrl("***".to_owned());
        };
        // The user part ends at the last '@' (a password may hold an unencoded '/', '?' or
        // '@'); when that '@' was in fact further on, more is hidden, never less.
        let (authority, tail) = match rest.rsplit_once('@') {
            Some((userinfo, after)) => {
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                let (hosts, tail) = after.split_at(end);
                let user = match userinfo.split_once(':') {
                    _ if userinfo.contains(['/', '?', '#']) => "***".to_owned(),
                    Some((user, _password)) => format!("{user}:***"),
                    None => userinfo.to_owned(),
                };
                (format!("{user}@{hosts}"), tail)
            }
            None => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (hosts, tail) = rest.split_at(end);
                (hosts.to_owned(), tail)
            }
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            format!("{key}=***")
                        }
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        RedactedUrl(format!("{scheme}://{authority}{tail}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::RedactedUrl;

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://canary:hunter2@db:5432/canary",
                "postgres://canary:***@db:5432/canary",
            ),
            (
                "postgresql://canary:p%40ss:w@rd@db/canary?sslmode=disable",
                "postgresql://canary:***@db/canary?sslmode=disable",
            ),
            (
                "postgres://db/canary?user=canary&password=hunter2&application_name=x",
                "postgres://db/canary?user=canary&password=***&application_name=x",
            ),
            ("postgres://canary@db", "postgres://canary@db"),
            (
                "postgres://canary:hun/ter?2@db/canary",
                "postgres://***@db/canary",
            ),
            (
                "postgres://db:5432/canary?password=hunter2@x",
                "postgres://***@x",
            ),
            (
                "postgres://db/canary?password=hunter2@x",
                "postgres://***@x",
            ),
            ("postgres://db:5432", "postgres://db:5432"),
            ("host=db password=hunter2", "***"),
        ];
        for (url, shown) in cases {
            let redacted = RedactedUrl::new(url);
            assert_eq!(redacted.to_string(), shown, "{url}");
            assert!(!format!("{redacted:?}").contains("hunter2"), "{url}");
        }
    }
}
