//! Email over SMTP with lettre. The Message-ID derives from the outbox key,
//! so a message sent again after a crash is recognisably the same message.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};
use sha2::{Digest, Sha256};

use super::DeliveryError;
use crate::db::outbox::Message;
use crate::domain::settings::Smtp;

pub(super) async fn send(smtp: &Smtp, m: &Message) -> Result<(), DeliveryError> {
    let field = |name: &str| {
        m.payload[name].as_str().map(str::to_owned).ok_or_else(|| DeliveryError::Permanent(format!("no `{name}`")))
    };
    let permanent = |e: &dyn std::fmt::Display| DeliveryError::Permanent(e.to_string());
    let message_id = format!("<{}@bursar>", hex::encode(&Sha256::digest(m.dedup_key.as_bytes())[..16]));
    let email = Email::builder()
        .from(smtp.from.parse().map_err(|e| permanent(&e))?)
        .to(field("to")?.parse().map_err(|e| permanent(&e))?)
        .subject(field("subject")?)
        .message_id(Some(message_id))
        .header(ContentType::TEXT_PLAIN)
        .body(field("text")?)
        .map_err(|e| permanent(&e))?;
    let mut transport = if smtp.starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(|e| permanent(&e))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
    }
    .port(smtp.port);
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let sent = transport.build().send(email).await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
        Err(e) => Err(DeliveryError::Transient(e.to_string())),
    }
}
