//! The Moodle adapter against a fake Moodle on loopback that checks the real
//! REST parameter encoding and answers with Moodle's response and error shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::app::TestApp;

const TOKEN: &str = "moodle-ws-token";

#[derive(Clone, Default)]
struct FakeMoodle {
    users: Arc<Mutex<HashMap<String, i64>>>,
    /// (userid, courseid, suspend)
    enrolments: Arc<Mutex<Vec<(String, String, String)>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

fn moodle_error(code: &str, message: &str) -> ResponseTemplate {
    // Moodle reports errors with HTTP 200.
    ResponseTemplate::new(200)
        .set_body_json(json!({"exception": "moodle_exception", "errorcode": code, "message": message}))
}

impl Respond for FakeMoodle {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let is_form = req.headers.get("content-type").is_some_and(|v| v == "application/x-www-form-urlencoded");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        let param = |k: &str| form.get(k).cloned();
        if !is_form || param("moodlewsrestformat").as_deref() != Some("json") {
            return moodle_error("invalidparameter", "Invalid parameter value detected");
        }
        if param("wstoken").as_deref() != Some(TOKEN) {
            return moodle_error("invalidtoken", "Invalid token - token not found");
        }
        let function = param("wsfunction").unwrap_or_default();
        self.calls.lock().unwrap().push(function.clone());
        match function.as_str() {
            "core_user_get_users_by_field" => {
                let (Some("email"), Some(email)) = (param("field").as_deref(), param("values[0]")) else {
                    return moodle_error("invalidparameter", "Invalid parameter value detected");
                };
                let users = self.users.lock().unwrap();
                let found: Vec<Value> = users
                    .get(&email)
                    .map(|id| json!({"id": id, "username": email, "email": email}))
                    .into_iter()
                    .collect();
                ResponseTemplate::new(200).set_body_json(found)
            }
            "core_user_create_users" => {
                let required = ["username", "email", "firstname", "lastname", "createpassword"];
                if required.iter().any(|f| param(&format!("users[0][{f}]")).is_none()) {
                    return moodle_error("invalidparameter", "Invalid parameter value detected (Missing required key)");
                }
                let email = param("users[0][email]").unwrap();
                let mut users = self.users.lock().unwrap();
                let id = 100 + users.len() as i64;
                users.insert(email.clone(), id);
                ResponseTemplate::new(200).set_body_json(json!([{"id": id, "username": email}]))
            }
            "enrol_manual_enrol_users" => {
                let get = |f: &str| param(&format!("enrolments[0][{f}]"));
                let (Some(role), Some(user), Some(course), Some(suspend)) =
                    (get("roleid"), get("userid"), get("courseid"), get("suspend"))
                else {
                    return moodle_error("invalidparameter", "Invalid parameter value detected");
                };
                if course != "42" {
                    return moodle_error("invalidrecord", "Can't find data record in database table course.");
                }
                assert_eq!(role, "5", "enrolled as a student");
                self.enrolments.lock().unwrap().push((user, course, suspend));
                ResponseTemplate::new(200).set_body_string("null")
            }
            _ => moodle_error("invalidrecord", "Can't find data record in database table external_functions."),
        }
    }
}

async fn setup(course_id: &str) -> (TestApp, FakeMoodle, MockServer) {
    let app = TestApp::spawn().await;
    let moodle = FakeMoodle::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webservice/rest/server.php"))
        .respond_with(moodle.clone())
        .mount(&server)
        .await;
    let set = app.patch_settings(&json!({"lms": {"type": "moodle", "base_url": server.uri(), "token": TOKEN}})).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["lms"]["token"], json!({"set": true}));
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"},
                          "lms": {"course_id": course_id}});
    app.put_offering("rust-101", &offering).await;
    (app, moodle, server)
}

fn purchase(customer: Value) -> Value {
    json!({"offering_id": "rust-101", "customer": customer,
           "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}})
}

#[tokio::test]
async fn a_new_learner_is_created_in_moodle_and_enrolled_as_a_student() {
    let (app, moodle, _server) = setup("42").await;
    let id = app.post_purchase(Some("p"), &purchase(json!({"email": "ana@example.org"}))).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["seats"][0]["status"], "active");
    assert_eq!(
        *moodle.calls.lock().unwrap(),
        ["core_user_get_users_by_field", "core_user_create_users", "enrol_manual_enrol_users"]
    );
    let user = moodle.users.lock().unwrap()["ana@example.org"].to_string();
    assert_eq!(*moodle.enrolments.lock().unwrap(), [(user, "42".to_owned(), "0".to_owned())]);
}

#[tokio::test]
async fn a_known_moodle_user_is_enrolled_directly() {
    let (app, moodle, _server) = setup("42").await;
    let body = purchase(json!({"email": "ana@example.org", "lms_user_id": "1007"}));
    let id = app.post_purchase(Some("p"), &body).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    assert_eq!(*moodle.calls.lock().unwrap(), ["enrol_manual_enrol_users"]);
    assert_eq!(moodle.enrolments.lock().unwrap()[0].0, "1007");
}

#[tokio::test]
async fn a_course_moodle_does_not_have_is_refused_and_the_buyer_refunded() {
    let (app, moodle, _server) = setup("999").await;
    let body = purchase(json!({"email": "ana@example.org", "lms_user_id": "1007"}));
    let id = app.post_purchase(Some("p"), &body).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["failure"]["code"], "enrollment_failed");
    assert_eq!(failed["payment"]["refunded"]["amount"], "49.00");
    assert!(moodle.enrolments.lock().unwrap().is_empty());
}

#[tokio::test]
async fn revoking_suspends_the_moodle_enrolment_instead_of_deleting_it() {
    let moodle = FakeMoodle::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webservice/rest/server.php"))
        .respond_with(moodle.clone())
        .mount(&server)
        .await;
    let adapter =
        bursar::lms::moodle::Moodle { base_url: server.uri(), token: TOKEN.into(), http: reqwest::Client::new() };
    let change = bursar::lms::SeatChange {
        seat_id: "seat_1".into(),
        purchase_id: "pur_1".into(),
        offering_id: "rust-101".into(),
        lms_course_id: Some("42".into()),
        learner: bursar::lms::Learner { email: None, lms_user_id: Some("1007".into()) },
        action: "suspend",
    };
    use bursar::lms::Lms;
    adapter.apply(&change, "k").await.unwrap();
    assert_eq!(*moodle.calls.lock().unwrap(), ["enrol_manual_enrol_users"], "no unenrol call");
    assert_eq!(*moodle.enrolments.lock().unwrap(), [("1007".to_owned(), "42".to_owned(), "1".to_owned())]);

    let wrong_token = bursar::lms::moodle::Moodle { token: "nope".into(), ..adapter };
    assert!(
        matches!(wrong_token.apply(&change, "k").await, Err(bursar::lms::LmsError::Refused(m)) if m.contains("invalidtoken"))
    );
}
