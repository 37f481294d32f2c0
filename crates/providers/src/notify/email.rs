//! Email over SMTP (lettre on tokio, rustls): the decision to the deployment lead.
//!
//! The server is a URL, `smtp://[user@]host[:port][?tls=required|opportunistic|none]` (STARTTLS,
//! port 587 by default, required unless the URL says otherwise) or `smtps://[user@]host[:port]`
//! (TLS from the first byte, port 465). The password comes separately as a `Secret`.

use std::time::Duration;

use canary_core::Secret;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Channel, Message, NotifyError};
use crate::BoxFuture;

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// STARTTLS, refusing servers that do not offer it (`smtp://`, the default).
    StartTls,
    /// STARTTLS when offered, plain otherwise (`?tls=opportunistic`).
    Opportunistic,
    /// No TLS (`?tls=none`): only for a relay on the same host or a test server.
    None,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Where and to whom mail goes. `Debug` hides a password written into `smtp_url`.
#[derive(Clone)]
pub struct EmailConfig {
    pub smtp_url: String,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// Connection and command timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_url", &redact(&self.smtp_url))
            .field("password", &self.password)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An SMTP channel.
#[derive(Clone)]
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
    security: SmtpSecurity,
    timeout: Duration,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("server", &self.server)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn config_error(detail: impl Into<String>) -> NotifyError {
    NotifyError::Config {
        channel: "email".into(),
        detail: detail.into(),
    }
}

impl Email {
    pub fn new(cfg: EmailConfig) -> Result<Self, NotifyError> {
        let url = reqwest::Url::parse(&cfg.smtp_url).map_err(|e| {
            config_error(format!(
                "the SMTP server {:?} is not a URL ({e}): write smtp://user@host:587",
                redact(&cfg.smtp_url)
            ))
        })?;
        let mut security = match url.scheme() {
            "smtp" => SmtpSecurity::StartTls,
            "smtps" => SmtpSecurity::Implicit,
            other => {
                return Err(config_error(format!(
                    "the SMTP URL scheme {other:?} is not smtp:// or smtps://"
                )));
            }
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref(), security) {
                ("tls", "required", SmtpSecurity::StartTls) => {}
                ("tls", "opportunistic", SmtpSecurity::StartTls) => {
                    security = SmtpSecurity::Opportunistic
                }
                ("tls", "none", SmtpSecurity::StartTls) => security = SmtpSecurity::None,
                _ => {
                    return Err(config_error(format!(
                        "unknown SMTP URL option {key}={value}: smtp:// takes tls=required|opportunistic|none, smtps:// takes none"
                    )));
                }
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| config_error("the SMTP URL names no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::Implicit => 465,
            _ => 587,
        });
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| config_error(format!("TLS for {host}: {e}")))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(cfg.timeout));
        builder = match security {
            SmtpSecurity::StartTls => builder.tls(Tls::Required(tls(&host)?)),
            SmtpSecurity::Opportunistic => builder.tls(Tls::Opportunistic(tls(&host)?)),
            SmtpSecurity::Implicit => builder.tls(Tls::Wrapper(tls(&host)?)),
            SmtpSecurity::None => builder.tls(Tls::None),
        };
        let user = percent_decode(url.username());
        let password = match (cfg.password, url.password()) {
            (Some(p), _) => Some(p),
            (None, Some(p)) => Some(Secret::new(percent_decode(p))),
            (None, None) => None,
        };
        match (user.is_empty(), password) {
            (false, Some(p)) => {
                builder = builder.credentials(Credentials::new(user, p.expose().to_owned()));
            }
            (false, None) => {
                return Err(config_error(format!(
                    "the SMTP URL names user {user:?} but no password is set: set the email channel's password"
                )));
            }
            (true, Some(_)) => {
                return Err(config_error(
                    "a password is set but the SMTP URL names no user: write smtp://user@host:port",
                ));
            }
            (true, None) => {}
        }
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| config_error(format!("{text:?} is not an email address: {e}")))
        };
        if cfg.to.is_empty() {
            return Err(config_error(
                "no recipients: add at least one address to `to`",
            ));
        }
        Ok(Email {
            transport: builder.build(),
            from: mailbox(&cfg.from)?,
            to: cfg
                .to
                .iter()
                .map(|t| mailbox(t))
                .collect::<Result<_, _>>()?,
            server: format!("{host}:{port}"),
            security,
            timeout: cfg.timeout,
        })
    }

    /// The mail sent for `message`: subject `[canary <service>] <title>`, plain text body with
    /// the details and the run's context.
    pub fn compose(&self, message: &Message) -> Result<lettre::Message, NotifyError> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!("[canary {}] {}", message.service, message.title))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mut body = String::new();
        if !message.text.is_empty() {
            body.push_str(&message.text);
            body.push_str("\n\n");
        }
        body.push_str(&format!(
            "service:  {}\nrun:      {}\nevent:    {}\nseverity: {:?}\nat:       {}\n",
            message.service,
            message.run_id,
            message.kind,
            message.severity,
            message.timestamp()
        ));
        if let Some(outcome) = message.outcome {
            body.push_str(&format!("decision: {outcome:?}\n"));
        }
        if let Some(link) = &message.link {
            body.push_str(&format!("link:     {link}\n"));
        }
        builder
            .body(body)
            .map_err(|e| config_error(format!("cannot build the message: {e}")))
    }
}

impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn name(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        format!("email {}", to.join(", "))
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let mail = self.compose(message)?;
            self.transport.send(mail).await.map(|_| ()).map_err(|e| {
                let detail = crate::error_text::error_chain(&e);
                if e.is_timeout() {
                    NotifyError::Timeout {
                        channel: self.name(),
                        after: self.timeout,
                    }
                } else if e.is_permanent() || e.is_transient() {
                    NotifyError::Smtp {
                        channel: self.name(),
                        detail,
                        permanent: e.is_permanent(),
                    }
                } else {
                    NotifyError::Unreachable {
                        channel: format!("{} via {}", self.name(), self.server),
                        detail,
                    }
                }
            })
        })
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high * 16 + low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> EmailConfig {
        EmailConfig {
            smtp_url: url.into(),
            password: None,
            from: "canary@example.com".into(),
            to: vec!["lead@example.com".into()],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn urls_choose_security_and_port() {
        let e = Email::new(cfg("smtp://mail.example.com")).unwrap();
        assert_eq!(
            (e.security, e.server.as_str()),
            (SmtpSecurity::StartTls, "mail.example.com:587")
        );
        let e = Email::new(cfg("smtps://mail.example.com")).unwrap();
        assert_eq!(
            (e.security, e.server.as_str()),
            (SmtpSecurity::Implicit, "mail.example.com:465")
        );
        let e = Email::new(cfg("smtp://127.0.0.1:2525?tls=none")).unwrap();
        assert_eq!(
            (e.security, e.server.as_str()),
            (SmtpSecurity::None, "127.0.0.1:2525")
        );
        assert_eq!(percent_decode("a%40b%2"), "a@b%2");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        for (url, hint) in [
            ("mail.example.com", "smtp://user@host:587"),
            ("http://x", "smtp:// or smtps://"),
            ("smtp://x?tls=maybe", "tls=required|opportunistic|none"),
            ("smtp://user@x", "no password"),
        ] {
            let err = Email::new(cfg(url)).unwrap_err().to_string();
            assert!(err.contains(hint), "{url}: {err}");
        }
        assert!(!format!("{:?}", cfg("smtp://u:hunter2@x:25")).contains("hunter2"));
        let err = Email::new(cfg("smtp://u:hunter2@x:25?tls=bad"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
