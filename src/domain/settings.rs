//! Tenant settings: where enrollments and notifications go. Parsed from the
//! API's JSON into checked values; secrets are write-only.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::offering::InvalidField;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LmsTarget {
    /// Bursar records enrollments itself.
    None,
    /// A signed POST to the platform per seat and action.
    Callback { url: String, secret: String },
    /// Moodle web services (REST) with a token.
    Moodle { base_url: String, token: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notifications {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Smtp {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// STARTTLS; off only for a relay on the same host.
    #[serde(default = "yes")]
    pub starttls: bool,
}

fn smtp_port() -> u16 {
    587
}
fn yes() -> bool {
    true
}

/// A secret as the API shows it: whether one is stored, never what it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Secret {
    pub set: bool,
}

impl Secret {
    pub const SET: Secret = Secret { set: true };
}

/// An LMS target as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShownLms {
    None,
    Callback { url: String, secret: Secret },
    Moodle { base_url: String, token: Secret },
}

/// Notification targets as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShownNotifications {
    #[schema(required = true)]
    pub webhook_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub webhook_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub smtp: Option<ShownSmtp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShownSmtp {
    pub host: String,
    pub port: u16,
    pub from: String,
    #[schema(required = true)]
    pub username: Option<String>,
    pub starttls: bool,
    pub password: Secret,
}

/// Provider credentials as the API shows them: each stored field `{"set": true}`.
pub fn shown_provider_credentials(
    stored: &Value,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, Secret>> {
    (stored.as_object().into_iter().flatten())
        .map(|(name, fields)| {
            let fields = fields.as_object().into_iter().flatten().map(|(k, _)| (k.clone(), Secret::SET)).collect();
            (name.clone(), fields)
        })
        .collect()
}

fn invalid(field: &str, message: impl ToString) -> InvalidField {
    InvalidField { field: field.to_owned(), message: message.to_string() }
}

fn check_url(field: &str, url: &str) -> Result<(), InvalidField> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(field, format!("`{url}` is not an http(s) URL"))),
    }
}

impl LmsTarget {
    pub fn parse(v: Value) -> Result<LmsTarget, InvalidField> {
        let target: LmsTarget = serde_json::from_value(v).map_err(|e| invalid("lms", e))?;
        match &target {
            LmsTarget::None => {}
            LmsTarget::Callback { url, secret } => {
                check_url("lms.url", url)?;
                if secret.len() < 16 {
                    return Err(invalid("lms.secret", "a signing secret has at least 16 characters"));
                }
            }
            LmsTarget::Moodle { base_url, token } => {
                check_url("lms.base_url", base_url)?;
                if token.is_empty() {
                    return Err(invalid("lms.token", "a Moodle web service token is required"));
                }
            }
        }
        Ok(target)
    }

    /// As the API shows it: secrets replaced by `{"set": true}`.
    pub fn redacted(&self) -> ShownLms {
        match self {
            LmsTarget::None => ShownLms::None,
            LmsTarget::Callback { url, .. } => ShownLms::Callback { url: url.clone(), secret: Secret::SET },
            LmsTarget::Moodle { base_url, .. } => ShownLms::Moodle { base_url: base_url.clone(), token: Secret::SET },
        }
    }
}

impl Notifications {
    pub fn parse(v: Value) -> Result<Notifications, InvalidField> {
        let n: Notifications = serde_json::from_value(v).map_err(|e| invalid("notifications", e))?;
        if let Some(url) = &n.webhook_url {
            check_url("notifications.webhook_url", url)?;
            if n.webhook_secret.as_ref().is_none_or(|s| s.len() < 16) {
                return Err(invalid(
                    "notifications.webhook_secret",
                    "a webhook needs a signing secret of 16+ characters",
                ));
            }
        }
        if let Some(smtp) = &n.smtp {
            if smtp.host.is_empty() {
                return Err(invalid("notifications.smtp.host", "an SMTP host is required"));
            }
            super::purchase::parse_email("notifications.smtp.from", &smtp.from)?;
        }
        Ok(n)
    }

    /// As the API shows them: secrets replaced by `{"set": …}`.
    pub fn redacted(&self) -> ShownNotifications {
        ShownNotifications {
            webhook_url: self.webhook_url.clone(),
            webhook_secret: self.webhook_secret.as_ref().map(|_| Secret::SET),
            smtp: self.smtp.as_ref().map(|s| ShownSmtp {
                host: s.host.clone(),
                port: s.port,
                from: s.from.clone(),
                username: s.username.clone(),
                starttls: s.starttls,
                password: Secret { set: s.password.is_some() },
            }),
        }
    }
}

/// The credentials each provider takes, as API.md names them.
const PROVIDER_FIELDS: [(&str, &[&str]); 2] =
    [("stripe", &["api_key", "webhook_secret"]), ("paypal", &["client_id", "client_secret", "webhook_id"])];

/// Applies a PATCH's `providers` to the stored credentials, field by field
/// (a JSON merge patch, RFC 7396): a field given replaces that field, `null`
/// removes it, a field not given is kept, so rotating one secret does not
/// erase the others. Unknown providers and fields, and values that are not
/// text, are refused naming them.
pub fn merge_provider_credentials(stored: &mut Value, patch: Value) -> Result<(), InvalidField> {
    let Value::Object(patch) = patch else {
        return Err(invalid("providers", "providers is an object by provider name"));
    };
    if !stored.is_object() {
        *stored = json!({});
    }
    for (name, given) in patch {
        let field = format!("providers.{name}");
        let Some((_, known)) = PROVIDER_FIELDS.iter().find(|(p, _)| *p == name) else {
            return Err(invalid(&field, "credentials are kept for stripe and paypal"));
        };
        let credentials = &mut stored[&name];
        match given {
            Value::Null => *credentials = Value::Null,
            Value::Object(fields) => {
                if !credentials.is_object() {
                    *credentials = json!({});
                }
                for (key, value) in fields {
                    let field = format!("{field}.{key}");
                    if !known.contains(&key.as_str()) {
                        return Err(invalid(&field, format!("{name} takes {}", known.join(", "))));
                    }
                    match value {
                        Value::Null => {
                            credentials.as_object_mut().expect("an object").remove(&key);
                        }
                        Value::String(text) if (1..=1024).contains(&text.chars().count()) => {
                            credentials[&key] = json!(text)
                        }
                        _ => return Err(invalid(&field, "a credential is text of 1 to 1024 characters")),
                    }
                }
            }
            _ => return Err(invalid(&field, "credentials are an object, or null to remove them")),
        }
    }
    stored.as_object_mut().expect("an object").retain(|_, v| v.as_object().is_some_and(|o| !o.is_empty()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_and_secrets_never_shown() {
        let cb = LmsTarget::parse(
            json!({"type": "callback", "url": "https://p.example/enroll", "secret": "0123456789abcdef"}),
        )
        .unwrap();
        let shown = serde_json::to_value(cb.redacted()).unwrap();
        assert_eq!(shown, json!({"type": "callback", "url": "https://p.example/enroll", "secret": {"set": true}}));
        assert!(!shown.to_string().contains("0123456789abcdef"));
        assert_eq!(
            LmsTarget::parse(json!({"type": "callback", "url": "ftp://x", "secret": "0123456789abcdef"}))
                .unwrap_err()
                .field,
            "lms.url"
        );
        assert_eq!(
            LmsTarget::parse(json!({"type": "callback", "url": "https://x.example", "secret": "short"}))
                .unwrap_err()
                .field,
            "lms.secret"
        );
        assert_eq!(LmsTarget::parse(json!({"type": "blackboard"})).unwrap_err().field, "lms");
        assert_eq!(LmsTarget::parse(json!({"type": "none"})).unwrap(), LmsTarget::None);
    }
}
