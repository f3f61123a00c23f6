//! An offering (a course, a session) as the platform describes it.

use serde::Deserialize;

use super::money::{Money, MoneyError, MoneyJson};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Course,
    /// Store credit cannot pay for these (they renew).
    Subscription,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Course => "course",
            Kind::Subscription => "subscription",
        }
    }
}

/// The request body of `PUT /v1/offerings/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = OfferingRequest)]
pub struct OfferingInput {
    pub title: String,
    pub price: MoneyJson,
    /// Seats for sale; null or absent is unlimited.
    #[serde(default)]
    pub capacity: Option<i64>,
    /// `course` (the default) or `subscription`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub lms: Option<LmsInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = OfferingLmsRequest)]
pub struct LmsInput {
    pub course_id: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub id: String,
    pub title: String,
    pub price: Money,
    /// None: unlimited seats.
    pub capacity: Option<i32>,
    pub kind: Kind,
    pub lms_course_id: Option<String>,
    pub lms_url: Option<String>,
}

/// A rejected field: its path in the request body and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl ToString) -> InvalidField {
    InvalidField { field: field.to_owned(), message: message.to_string() }
}

impl Offering {
    pub fn parse(id: &str, input: OfferingInput) -> Result<Offering, InvalidField> {
        if id.is_empty() || id.len() > 255 {
            return Err(invalid("offering_id", "an offering id has 1 to 255 characters"));
        }
        let title = input.title.trim();
        if title.is_empty() || title.len() > 500 {
            return Err(invalid("title", "a title has 1 to 500 characters"));
        }
        let price = Money::try_from(&input.price).map_err(|e| {
            let field = match e {
                MoneyError::UnknownCurrency(_) => "price.currency",
                _ => "price.amount",
            };
            invalid(field, e)
        })?;
        let capacity = match input.capacity {
            None => None,
            Some(c) if (0..=i32::MAX as i64).contains(&c) => Some(c as i32),
            Some(_) => {
                return Err(invalid("capacity", "capacity is a number of seats, 0 or more, or null"));
            }
        };
        let kind = match input.kind.as_deref() {
            None | Some("course") => Kind::Course,
            Some("subscription") => Kind::Subscription,
            Some(other) => {
                return Err(invalid("kind", format!("`{other}` is not course or subscription")));
            }
        };
        let lms = input.lms.unwrap_or(LmsInput { course_id: None, url: None });
        Ok(Offering {
            id: id.to_owned(),
            title: title.to_owned(),
            price,
            capacity,
            kind,
            lms_course_id: lms.course_id,
            lms_url: lms.url,
        })
    }
}
