//! The purchase workflow's steps (workflows/purchase.toml). Each takes what
//! it needs of the purchase from the run's context (`Facts`) or, for what can
//! change, from the database; calls out through the effects ledger; and
//! stages what happened into its completion. Every write is idempotent, so a
//! step that runs again after a crash finds its work done.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db;
use crate::db::purchases::{PaymentUpdate, PurchaseRow, SeatRow};
use crate::domain::money::{Currency, Money};
use crate::domain::settings::LmsTarget;
use crate::engine::{CallError, Lookup, Outcome, StepCtx, StepHandler};
use crate::lms::{self, Learner, LmsError, SeatChange};
use crate::providers::{
    Authorization, AuthorizeRequest, Captured, PaymentProvider, ProviderError, Providers, Refunded,
};

/// How long a buyer has to complete an action (3-D Secure, an approval).
const ACTION_DEADLINE: chrono::Duration = chrono::Duration::hours(1);

/// What the workflow knows of its purchase from the start, none of which
/// ever changes: carried in the run's context, so the hot path does not
/// read the purchase again at every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Facts {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub offering_id: String,
    pub quantity: i32,
    pub currency: String,
    pub total_minor: i64,
    pub provider: String,
    pub payment_method: String,
    pub customer_email: String,
}

impl From<&PurchaseRow> for Facts {
    fn from(p: &PurchaseRow) -> Facts {
        Facts {
            id: p.id,
            tenant_id: p.tenant_id,
            offering_id: p.offering_id.clone(),
            quantity: p.quantity,
            currency: p.currency.clone(),
            total_minor: p.total_minor,
            provider: p.provider.clone(),
            payment_method: p.payment_method.clone(),
            customer_email: p.customer_email.clone(),
        }
    }
}

/// The context a purchase run starts with.
pub fn start_context(facts: &Facts) -> Value {
    json!({"purchase_id": facts.id, "purchase": facts})
}

/// The purchase's facts from the context; a run started before they were
/// carried there reads them once and keeps them.
async fn facts(ctx: &mut StepCtx) -> Result<Facts, Outcome> {
    if let Ok(f) = serde_json::from_value::<Facts>(ctx.context["purchase"].clone()) {
        return Ok(f);
    }
    let facts = Facts::from(&load(ctx).await?);
    ctx.context["purchase"] = json!(facts);
    Ok(facts)
}

/// The provider's reference for the payment, which authorize keeps in the
/// context (or, for a run from before that, the purchase's).
async fn payment_reference(ctx: &mut StepCtx) -> Result<Option<String>, Outcome> {
    if let Some(r) = ctx.context["payment_reference"].as_str() {
        return Ok(Some(r.to_owned()));
    }
    Ok(load(ctx).await?.payment_reference)
}

async fn load(ctx: &StepCtx) -> Result<PurchaseRow, Outcome> {
    let id = ctx.context["purchase_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let Some(id) = id else {
        return Err(Outcome::park("the run's context names no purchase"));
    };
    match db::purchases::by_id(ctx.pool(), id).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(Outcome::park(format!("purchase {id} does not exist"))),
        Err(e) => Err(Outcome::retry(e)),
    }
}

fn currency(code: &str) -> Result<Currency, Outcome> {
    code.parse().map_err(|e| Outcome::park(format!("{e}")))
}

fn total(p: &Facts) -> Result<Money, Outcome> {
    Ok(Money::from_minor(p.total_minor, currency(&p.currency)?))
}

fn call_error(e: ProviderError) -> CallError {
    match e {
        ProviderError::Rejected(m) => CallError::Definitive(m),
        ProviderError::Unavailable(m) => CallError::Unknown(m),
    }
}

/// What the provider answered to an earlier request with this key.
async fn lookup<T: serde::de::DeserializeOwned>(
    provider: &dyn PaymentProvider,
    key: &str,
) -> Result<Lookup<T>, CallError> {
    match provider.lookup(key).await.map_err(call_error)? {
        Some(v) => serde_json::from_value(v).map(Lookup::Succeeded).map_err(|e| CallError::Unknown(e.to_string())),
        None => Ok(Lookup::NotApplied),
    }
}

/// Calls the provider through the effects ledger as effect `name`: the call
/// gets the ledger's key, and an earlier attempt whose answer was lost is
/// resolved by asking the provider before anything is called again.
async fn provider_effect<T, F, Fut>(
    ctx: &StepCtx,
    name: &str,
    provider: Arc<dyn PaymentProvider>,
    call: F,
) -> Result<T, crate::engine::EffectError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce(Arc<dyn PaymentProvider>, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let asked = provider.clone();
    let adapter = provider.name();
    ctx.effect(
        name,
        |key| async move {
            call(provider, key).await.map_err(|e| {
                crate::metrics::adapter_error("provider", adapter);
                call_error(e)
            })
        },
        |key| async move { lookup(asked.as_ref(), &key).await },
    )
    .await
}

fn provider_for(providers: &Providers, name: &str) -> Result<Arc<dyn PaymentProvider>, Outcome> {
    providers.get(name).ok_or_else(|| Outcome::park(format!("provider `{name}` is not configured")))
}

/// The platform webhook for a purchase status change.
fn status_event(id: Uuid, offering_id: &str, status: &str) -> Value {
    json!({
        "type": format!("purchase.{status}"),
        "data": {"purchase_id": crate::api::ids::purchase(id), "offering_id": offering_id, "status": status},
    })
}

/// Records what the provider said, with the step's result.
fn stage_payment(ctx: &StepCtx, update: PaymentUpdate) {
    ctx.stage(db::purchases::SET_PAYMENT, serde_json::to_value(update).expect("serializable"));
}

macro_rules! try_outcome {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(outcome) => return outcome,
        }
    };
}

pub struct ReserveSeats;

#[async_trait]
impl StepHandler for ReserveSeats {
    fn outcomes(&self) -> &[&'static str] {
        &["ok", "sold_out"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(facts(ctx).await);
        let capacity = match db::offerings::capacity(ctx.pool(), p.tenant_id, &p.offering_id).await {
            Ok(Some(capacity)) => capacity,
            Ok(None) => return Outcome::park("the purchase's offering is gone"),
            Err(e) => return Outcome::retry(e),
        };
        if capacity.is_none() {
            // Unlimited: nothing to decide, so the reservation commits with
            // this step (once: it skips a purchase already reserved).
            ctx.stage(db::purchases::RESERVE_UNLIMITED, json!({"id": p.id}));
            return Outcome::next("ok");
        }
        // Limited: the guarded UPDATE decides, serialized on the offering's row.
        match db::purchases::reserve_seats(ctx.pool(), p.id).await {
            Ok(true) => Outcome::next("ok"),
            Ok(false) => {
                // Failed without a seat: its seats will never be, and the
                // platform hears of it as of any failure.
                ctx.stage(db::purchases::CANCEL_UNRESERVED_SEATS, json!({"id": p.id}));
                ctx.emit("webhook", "purchase.failed", status_event(p.id, &p.offering_id, "failed"));
                Outcome::next("sold_out")
            }
            Err(e) => Outcome::retry(e),
        }
    }
}

pub struct Authorize(pub Providers);

#[async_trait]
impl StepHandler for Authorize {
    fn outcomes(&self) -> &[&'static str] {
        &["ok", "declined"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(facts(ctx).await);
        let amount = try_outcome!(total(&p));
        // Resumed by the provider's webhook after the buyer acted.
        if let Some(signal) = ctx.signal.clone() {
            let (status, authorized_minor, label) = match signal.name.as_str() {
                "payment.authorized" => ("authorized", Some(p.total_minor), "ok"),
                _ => ("declined", None, "declined"),
            };
            stage_payment(ctx, PaymentUpdate { id: p.id, status, authorized_minor, ..Default::default() });
            return Outcome::next(label);
        }
        let waiting_event = status_event(p.id, &p.offering_id, "requires_action");
        let (p_id, p_total) = (p.id, p.total_minor);
        let provider = try_outcome!(provider_for(&self.0, &p.provider));
        let answer = provider_effect(ctx, "authorize", provider, |provider, key| async move {
            let req = AuthorizeRequest {
                tenant_id: p.tenant_id,
                purchase_id: p.id,
                amount,
                payment_method: &p.payment_method,
                idempotency_key: &key,
            };
            provider.authorize(&req).await
        })
        .await;
        let update = match &answer {
            Ok(Authorization::Authorized { reference }) => Some(PaymentUpdate {
                id: p_id,
                status: "authorized",
                reference: Some(reference.clone()),
                authorized_minor: Some(p_total),
                ..Default::default()
            }),
            Ok(Authorization::RequiresAction { reference, next_action }) => Some(PaymentUpdate {
                id: p_id,
                status: "requires_action",
                reference: Some(reference.clone()),
                next_action: Some(next_action.clone()),
                ..Default::default()
            }),
            Ok(Authorization::Declined { reference, .. }) => {
                Some(PaymentUpdate { id: p_id, status: "declined", reference: reference.clone(), ..Default::default() })
            }
            Err(_) => None,
        };
        if let Some(update) = update {
            if let Some(reference) = &update.reference {
                // For capture, or a void, without reading the purchase again.
                ctx.context["payment_reference"] = json!(reference);
            }
            stage_payment(ctx, update);
        }
        match answer {
            Ok(Authorization::Authorized { .. }) => Outcome::next("ok"),
            Ok(Authorization::RequiresAction { .. }) => {
                ctx.emit("webhook", "purchase.requires_action", waiting_event);
                Outcome::wait(&["payment.authorized", "payment.failed"], Some(Utc::now() + ACTION_DEADLINE))
            }
            Ok(Authorization::Declined { .. }) => Outcome::next("declined"),
            Err(crate::engine::EffectError::Failed(_)) => Outcome::next("declined"),
            Err(e) => e.into_retry(),
        }
    }
}

pub struct Capture(pub Providers);

#[async_trait]
impl StepHandler for Capture {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(facts(ctx).await);
        let amount = try_outcome!(total(&p));
        let provider = try_outcome!(provider_for(&self.0, &p.provider));
        let Some(reference) = try_outcome!(payment_reference(ctx).await) else {
            return Outcome::park("capture without an authorization reference");
        };
        let captured: Result<Captured, _> =
            provider_effect(
                ctx,
                "capture",
                provider,
                |p, key| async move { p.capture(&reference, amount, &key).await },
            )
            .await;
        match captured {
            Ok(c) => {
                let captured_minor = Some(c.amount_minor);
                stage_payment(
                    ctx,
                    PaymentUpdate { id: p.id, status: "captured", captured_minor, ..Default::default() },
                );
                Outcome::next("ok")
            }
            // An authorization that cannot be captured needs a person: the money is held.
            Err(crate::engine::EffectError::Failed(why)) => {
                Outcome::park(format!("the provider refused the capture: {why}"))
            }
            Err(e) => e.into_retry(),
        }
    }
}

/// Enrolls every assigned seat at the tenant's LMS, one effect per seat so a
/// retry skips the seats already done. With no LMS configured (`none`),
/// Bursar records the enrollment itself.
pub struct Enroll {
    pub http: reqwest::Client,
}

#[async_trait]
impl StepHandler for Enroll {
    fn outcomes(&self) -> &[&'static str] {
        &["ok", "refused"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(facts(ctx).await);
        let f = match db::purchases::fulfilment(ctx.pool(), p.tenant_id, p.id, &p.offering_id).await {
            Ok(Some(f)) => f,
            Ok(None) => return Outcome::park("the purchase's offering is gone"),
            Err(e) => return Outcome::retry(e),
        };
        let Ok(target) = serde_json::from_value::<LmsTarget>(f.lms) else {
            return Outcome::park("the tenant's LMS settings do not parse");
        };
        let lms_kind = match &target {
            LmsTarget::None => "none",
            LmsTarget::Callback { .. } => "callback",
            LmsTarget::Moodle { .. } => "moodle",
        };
        let to_enroll =
            |s: &SeatRow| s.status == "unassigned" && (s.assignee_email.is_some() || s.assignee_lms_user_id.is_some());
        // What notify, which runs next, tells the learners once these seats
        // are active: carried in the context, so it does not read it all again.
        let notice = Notice {
            title: f.title.clone(),
            lms_url: f.lms_url.clone(),
            enrolled: (f.seats.iter())
                .filter(|s| s.status == "active" || to_enroll(s))
                .filter_map(|s| Some((s.id, s.assignee_email.clone()?)))
                .collect(),
        };
        ctx.context["notice"] = json!(notice);
        let seats = f.seats.into_iter().filter(to_enroll);
        let Some(adapter) = lms::adapter(&target, &self.http) else {
            for seat in seats {
                ctx.stage(db::purchases::ACTIVATE_SEAT, json!({"id": seat.id}));
            }
            return Outcome::next("ok");
        };
        let course = f.lms_course_id;
        for seat in seats {
            let change = SeatChange {
                seat_id: crate::api::ids::seat(seat.id),
                purchase_id: crate::api::ids::purchase(p.id),
                offering_id: p.offering_id.clone(),
                lms_course_id: course.clone(),
                learner: Learner { email: seat.assignee_email.clone(), lms_user_id: seat.assignee_lms_user_id.clone() },
                action: "enroll",
            };
            let adapter = adapter.as_ref();
            let done: Result<Value, _> = ctx
                .effect(
                    &format!("enroll:{}", seat.id),
                    |key| async move {
                        adapter
                            .apply(&change, &key)
                            .await
                            .map(|()| json!({}))
                            .inspect_err(|_| crate::metrics::adapter_error("lms", lms_kind))
                            .map_err(|e| match e {
                                LmsError::Refused(m) => CallError::Definitive(m),
                                LmsError::Unavailable(m) => CallError::Unknown(m),
                            })
                    },
                    // The LMS dedups by seat and key ("already enrolled" is
                    // success), so sending again with the same key is the way to ask.
                    |_key| async { Ok(Lookup::NotApplied) },
                )
                .await;
            match done {
                Ok(_) => {
                    ctx.stage(db::purchases::ACTIVATE_SEAT, json!({"id": seat.id}));
                }
                Err(crate::engine::EffectError::Failed(why)) => {
                    ctx.context["enrollment_error"] = json!(why);
                    return Outcome::next("refused");
                }
                Err(e) => return e.into_retry(),
            }
        }
        Outcome::next("ok")
    }
}

/// The compensation when enrollment fails for good after the money was
/// captured: refund all of it, then the seats go back.
pub struct RefundAll(pub Providers);

#[async_trait]
impl StepHandler for RefundAll {
    fn outcomes(&self) -> &[&'static str] {
        &["enrollment_failed"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        // What was captured and refunded changes: read the purchase itself.
        let p = try_outcome!(load(ctx).await);
        let amount = Money::from_minor(p.captured_minor - p.refunded_minor, try_outcome!(currency(&p.currency)));
        let provider = try_outcome!(provider_for(&self.0, &p.provider));
        let Some(reference) = p.payment_reference.clone() else {
            return Outcome::park("refund without a payment reference");
        };
        let refunded: Result<Refunded, _> =
            provider_effect(ctx, "refund", provider, |p, key| async move { p.refund(&reference, amount, &key).await })
                .await;
        match refunded {
            Ok(_) => {
                // With the step's result: if that commit is lost, the ledger
                // row stays pending and the next attempt asks the provider.
                ctx.stage(db::purchases::RECORD_FULL_REFUND, json!({"id": p.id}));
                ctx.emit("webhook", "purchase.failed", status_event(p.id, &p.offering_id, "failed"));
                Outcome::next("enrollment_failed")
            }
            // A refund the provider will not make needs a person (PAYMENTS.md).
            Err(crate::engine::EffectError::Failed(why)) => Outcome::park(format!("the refund was refused: {why}")),
            Err(e) => e.into_retry(),
        }
    }
}

/// What notify says: the offering's title and link, and the enrolled seats
/// with an address to write to.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    title: String,
    lms_url: Option<String>,
    enrolled: Vec<(Uuid, String)>,
}

/// The notice enroll left in the context or, for a run whose enroll did not
/// (one started before it did), read from the purchase.
async fn notice(ctx: &StepCtx, p: &Facts) -> Result<Notice, Outcome> {
    if let Ok(n) = serde_json::from_value::<Notice>(ctx.context["notice"].clone()) {
        return Ok(n);
    }
    let f = match db::purchases::fulfilment(ctx.pool(), p.tenant_id, p.id, &p.offering_id).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Outcome::park("the purchase's offering is gone")),
        Err(e) => return Err(Outcome::retry(e)),
    };
    let enrolled = (f.seats.into_iter())
        .filter(|s| s.status == "active")
        .filter_map(|s| Some((s.id, s.assignee_email?)))
        .collect();
    Ok(Notice { title: f.title, lms_url: f.lms_url, enrolled })
}

/// Tells the platform (webhook) and the people (receipt, enrollment
/// confirmations), through the outbox: the messages exist if and only if
/// this step's result commits, and a retried step does not queue them twice.
pub struct Notify;

#[async_trait]
impl StepHandler for Notify {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(facts(ctx).await);
        let n = try_outcome!(notice(ctx, &p).await);
        let total = try_outcome!(total(&p));
        ctx.emit("webhook", "purchase.completed", status_event(p.id, &p.offering_id, "completed"));
        ctx.emit(
            "email",
            "receipt",
            json!({
                "to": p.customer_email,
                "subject": format!("Your receipt for {}", n.title),
                "text": format!("Thank you for your purchase.\n\n{} x {}\nTotal: {}\nReference: {}\n",
                                p.quantity, n.title, total, crate::api::ids::purchase(p.id)),
            }),
        );
        let url = n.lms_url.as_deref().unwrap_or("your learning platform");
        for (seat, email) in &n.enrolled {
            ctx.emit(
                "email",
                &format!("enrolled:{seat}"),
                json!({
                    "to": email,
                    "subject": format!("You are enrolled in {}", n.title),
                    "text": format!("You now have access to {}.\n\nStart here: {url}\n", n.title),
                }),
            );
        }
        Outcome::next("ok")
    }
}

/// No money was captured: the seats go back, and an open authorization
/// request is cancelled at the provider.
pub struct ReleaseSeats(pub Providers);

#[async_trait]
impl StepHandler for ReleaseSeats {
    fn outcomes(&self) -> &[&'static str] {
        &["payment_declined", "payment_expired"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let p = try_outcome!(load(ctx).await);
        let expired = p.payment_status == "requires_action";
        if expired && let (Some(provider), Some(reference)) = (self.0.get(&p.provider), p.payment_reference.clone()) {
            let voided: Result<Value, _> = provider_effect(ctx, "void", provider, |p, key| async move {
                p.void(&reference, &key).await.map(|()| json!({}))
            })
            .await;
            if let Err(e) = voided {
                return e.into_retry();
            }
        }
        if let Err(e) = db::purchases::release_seats(ctx.pool(), p.id).await {
            return Outcome::retry(e);
        }
        ctx.emit("webhook", "purchase.failed", status_event(p.id, &p.offering_id, "failed"));
        Outcome::next(if expired { "payment_expired" } else { "payment_declined" })
    }
}
