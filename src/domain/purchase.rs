//! A purchase request as the platform sends it, checked into domain values.

use serde::Deserialize;

use super::offering::InvalidField;
use crate::providers;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PurchaseRequest)]
pub struct PurchaseInput {
    pub offering_id: String,
    /// Seats to buy; more than one is a bulk purchase.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 10000)]
    pub quantity: i64,
    pub customer: CustomerInput,
    pub payment: PaymentInput,
    /// Not supported yet: a purchase with a coupon is refused.
    #[serde(default)]
    pub coupon: Option<String>,
    #[serde(default)]
    pub enrollment: Option<EnrollmentInput>,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CustomerInput {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lms_user_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PaymentInput {
    pub provider: String,
    pub payment_method: String,
    #[serde(default)]
    pub save_payment_method: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentInput {
    /// `immediate` (the default). `confirmation` is refused until seats can be
    /// invited and accepted.
    #[serde(default)]
    pub mode: Option<String>,
    /// Who takes the seats, in order; a single-seat purchase goes to the customer.
    #[serde(default)]
    pub assign_to: Vec<AssigneeInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AssigneeInput {
    pub email: Option<String>,
    pub lms_user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignee {
    pub email: Option<String>,
    pub lms_user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewPurchase {
    pub offering_id: String,
    pub quantity: u32,
    pub email: String,
    pub name: Option<String>,
    pub lms_user_id: Option<String>,
    pub provider: String,
    pub payment_method: String,
    pub enrollment_mode: &'static str,
    /// One per seat, in order; seats past the list are left unassigned.
    pub assignees: Vec<Assignee>,
}

fn invalid(field: &str, message: impl ToString) -> InvalidField {
    InvalidField { field: field.to_owned(), message: message.to_string() }
}

/// An address a mailer will accept: one @, something on each side, a dot in
/// the domain, no spaces. Deliverability is the mailer's business.
pub fn parse_email(field: &str, raw: &str) -> Result<String, InvalidField> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok { Ok(email) } else { Err(invalid(field, format!("`{raw}` is not an email address"))) }
}

impl NewPurchase {
    pub fn parse(input: PurchaseInput) -> Result<NewPurchase, InvalidField> {
        if input.offering_id.is_empty() || input.offering_id.len() > 255 {
            return Err(invalid("offering_id", "an offering id has 1 to 255 characters"));
        }
        if !(1..=10_000).contains(&input.quantity) {
            return Err(invalid("quantity", "quantity is a number of seats from 1 to 10000"));
        }
        let email = parse_email("customer.email", &input.customer.email)?;
        if !providers::KNOWN.contains(&input.payment.provider.as_str()) {
            return Err(invalid(
                "payment.provider",
                format!("`{}` is not one of {}", input.payment.provider, providers::KNOWN.join(", ")),
            ));
        }
        if input.payment.payment_method.is_empty() || input.payment.payment_method.len() > 255 {
            return Err(invalid("payment.payment_method", "a payment method has 1 to 255 characters"));
        }
        if input.coupon.is_some() {
            return Err(invalid("coupon", "coupons are not supported yet"));
        }
        let enrollment = input.enrollment.unwrap_or(EnrollmentInput { mode: None, assign_to: vec![] });
        let enrollment_mode = match enrollment.mode.as_deref() {
            None | Some("immediate") => "immediate",
            // Seats invited and accepted by their learners come with the
            // seat endpoints; until then such a purchase would enroll at once.
            Some("confirmation") => {
                return Err(invalid("enrollment.mode", "`confirmation` (invite, then accept) is not supported yet"));
            }
            Some(other) => {
                return Err(invalid("enrollment.mode", format!("`{other}` is not immediate or confirmation")));
            }
        };
        let quantity = input.quantity as u32;
        if enrollment.assign_to.len() > quantity as usize {
            return Err(invalid("enrollment.assign_to", "more assignees than seats"));
        }
        let mut assignees = Vec::new();
        for (i, a) in enrollment.assign_to.into_iter().enumerate() {
            let field = format!("enrollment.assign_to[{i}]");
            let email = a.email.as_deref().map(|e| parse_email(&format!("{field}.email"), e)).transpose()?;
            if email.is_none() && a.lms_user_id.is_none() {
                return Err(invalid(&field, "an assignee needs an email or an lms_user_id"));
            }
            assignees.push(Assignee { email, lms_user_id: a.lms_user_id });
        }
        // A single seat goes to the buyer unless the request says otherwise.
        if quantity == 1 && assignees.is_empty() {
            assignees.push(Assignee { email: Some(email.clone()), lms_user_id: input.customer.lms_user_id.clone() });
        }
        Ok(NewPurchase {
            offering_id: input.offering_id,
            quantity,
            email,
            name: input.customer.name,
            lms_user_id: input.customer.lms_user_id,
            provider: input.payment.provider,
            payment_method: input.payment.payment_method,
            enrollment_mode,
            assignees,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(parse_email("e", " Ana@Example.org ").unwrap(), "ana@example.org");
        for bad in ["", "ana", "ana@", "@example.org", "ana@example", "a b@example.org", "a@b@example.org", "a@.org"] {
            assert!(parse_email("e", bad).is_err(), "{bad:?}");
        }
    }
}
