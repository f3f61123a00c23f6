//! Moodle web services over REST (`/webservice/rest/server.php`): find the
//! learner by email or create them, then enrol with the manual enrolment
//! plugin. Revoking suspends the enrolment instead of deleting it, because
//! unenrolling in Moodle purges the learner's work in the course.
//!
//! Moodle answers HTTP 200 even for errors, with
//! `{"exception": ..., "errorcode": ..., "message": ...}`, and takes arrays
//! in PHP's form encoding: `users[0][email]=...`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{Lms, LmsError, SeatChange};

/// Moodle's "student" role in a stock installation.
const STUDENT_ROLE: &str = "5";

pub struct Moodle {
    pub base_url: String,
    pub token: String,
    pub http: reqwest::Client,
}

#[derive(Deserialize)]
struct User {
    id: i64,
}

/// Error codes that mean the request can never succeed as made.
const REFUSALS: [&str; 6] =
    ["invalidtoken", "accessexception", "invalidrecord", "invalidparameter", "wsenrolnotavailable", "nopermissions"];

impl Moodle {
    async fn call(&self, function: &str, params: &[(String, String)]) -> Result<Value, LmsError> {
        let mut form: Vec<(String, String)> = vec![
            ("wstoken".into(), self.token.clone()),
            ("wsfunction".into(), function.into()),
            ("moodlewsrestformat".into(), "json".into()),
        ];
        form.extend_from_slice(params);
        let url = format!("{}/webservice/rest/server.php", self.base_url.trim_end_matches('/'));
        let res = self.http.post(url).form(&form).send().await.map_err(|e| LmsError::Unavailable(e.to_string()))?;
        if !res.status().is_success() {
            return Err(LmsError::Unavailable(format!("Moodle answered {}", res.status())));
        }
        let body: Value = res.json().await.map_err(|e| LmsError::Unavailable(e.to_string()))?;
        if let Some(code) = body.get("errorcode").and_then(Value::as_str) {
            let message = body.get("message").and_then(Value::as_str).unwrap_or_default();
            let error = format!("{function}: {code}: {message}");
            return Err(if REFUSALS.contains(&code) { LmsError::Refused(error) } else { LmsError::Unavailable(error) });
        }
        Ok(body)
    }

    /// The Moodle user id: given, found by email, or newly created.
    async fn user_id(&self, change: &SeatChange) -> Result<String, LmsError> {
        if let Some(id) = &change.learner.lms_user_id {
            return Ok(id.clone());
        }
        let Some(email) = &change.learner.email else {
            return Err(LmsError::Refused("the seat has neither an LMS user id nor an email".into()));
        };
        let found = self
            .call(
                "core_user_get_users_by_field",
                &[("field".into(), "email".into()), ("values[0]".into(), email.clone())],
            )
            .await?;
        let users: Vec<User> = serde_json::from_value(found).map_err(|e| LmsError::Unavailable(e.to_string()))?;
        if let Some(user) = users.first() {
            return Ok(user.id.to_string());
        }
        let local = email.split('@').next().unwrap_or("learner");
        let created = self
            .call(
                "core_user_create_users",
                &[
                    ("users[0][username]".into(), email.clone()),
                    ("users[0][email]".into(), email.clone()),
                    ("users[0][firstname]".into(), local.into()),
                    ("users[0][lastname]".into(), "-".into()),
                    // Moodle mails the learner a password of its own making.
                    ("users[0][createpassword]".into(), "1".into()),
                ],
            )
            .await?;
        let users: Vec<User> = serde_json::from_value(created).map_err(|e| LmsError::Unavailable(e.to_string()))?;
        users.first().map(|u| u.id.to_string()).ok_or_else(|| LmsError::Unavailable("no user created".into()))
    }
}

#[async_trait]
impl Lms for Moodle {
    async fn apply(&self, change: &SeatChange, _idempotency_key: &str) -> Result<(), LmsError> {
        let course = change
            .lms_course_id
            .clone()
            .ok_or_else(|| LmsError::Refused("the offering has no lms.course_id".into()))?;
        let user = self.user_id(change).await?;
        let suspend = if change.action == "suspend" { "1" } else { "0" };
        // Enrolling someone already enrolled updates the enrolment: repeating is harmless.
        self.call(
            "enrol_manual_enrol_users",
            &[
                ("enrolments[0][roleid]".into(), STUDENT_ROLE.into()),
                ("enrolments[0][userid]".into(), user),
                ("enrolments[0][courseid]".into(), course),
                ("enrolments[0][suspend]".into(), suspend.into()),
            ],
        )
        .await?;
        Ok(())
    }
}
