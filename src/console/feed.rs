//! `GET /api/alerts`: the live alert feed as Server-Sent Events.
//!
//! Each alert is one `alert` event whose `id` is its sequence number and
//! whose data is the alert's JSON ([`crate::alerts::json`]). The feed
//! starts with the next alert, or at `?from_seq=N`; a client that
//! reconnects sends `Last-Event-ID: N` and the feed resumes at `N + 1`, so
//! nothing is missed or repeated while the alert log still holds it. The
//! filters are those of `Alerts.Subscribe`: `instruments` (comma-separated
//! symbols or globs), `min_severity`, `actions`, `rule_ids`,
//! `include_shadow`.
//!
//! The reader catches up ([`WhenBehind::CatchUp`]) instead of being cut
//! off: a slow page reads on from the ring and the journal. When it ends
//! (shutdown, or the log no longer holds its place) one `end` event says
//! why and where to resume, and the response finishes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::api::error;
use super::Console;
use crate::alerts::json::AlertJson;
use crate::alerts::{AlertReader, FilterSpec, SubscribeError, SubscriptionEnd, SubscriptionFilter, WhenBehind};
use crate::model::Severity;

/// The query of `/api/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FeedQuery {
    /// The first alert wanted; absent or 0: the next one published.
    pub from_seq: Option<u64>,
    pub instruments: Option<String>,
    pub min_severity: Option<String>,
    pub actions: Option<String>,
    pub rule_ids: Option<String>,
    pub include_shadow: bool,
}

fn list(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

impl FeedQuery {
    /// The filter asked for.
    ///
    /// # Errors
    /// An unknown severity or a bad glob, as a message naming it.
    pub fn filter(&self) -> Result<SubscriptionFilter, String> {
        let min_severity = match self.min_severity.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(
                Severity::from_name(name)
                    .ok_or_else(|| format!("min_severity: `{name}` is not a severity; expected {}", Severity::NAMES))?,
            ),
        };
        SubscriptionFilter::new(FilterSpec {
            instruments: list(self.instruments.as_deref()),
            min_severity,
            actions: list(self.actions.as_deref()),
            rule_ids: list(self.rule_ids.as_deref()),
            include_shadow: self.include_shadow,
        })
        .map_err(|e| e.to_string())
    }
}

/// Where a feed starts: after the `Last-Event-ID` a reconnecting client
/// sent, else `from_seq`, else the next alert (0).
///
/// # Errors
/// A `Last-Event-ID` that is not a sequence number.
pub fn start_seq(headers: &HeaderMap, query: &FeedQuery) -> Result<u64, String> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().unwrap_or_default().trim();
        let seq: u64 = text
            .parse()
            .map_err(|_| format!("Last-Event-ID: `{text}` is not an alert sequence number"))?;
        return Ok(seq.saturating_add(1));
    }
    Ok(query.from_seq.unwrap_or(0))
}

/// `GET /api/alerts`.
pub async fn alerts(State(console): State<Console>, headers: HeaderMap, Query(query): Query<FeedQuery>) -> Response {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let from = match start_seq(&headers, &query) {
        Ok(seq) => seq,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let reader = match console.core.bus().reader(filter, from, WhenBehind::CatchUp) {
        Ok(reader) => reader,
        Err(e @ SubscribeError::TooOld { .. }) => return error(StatusCode::GONE, &e.to_string()),
        Err(e @ SubscribeError::Ahead { .. }) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ SubscribeError::Closed) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    Sse::new(Feed {
        reader: Some(reader),
        json: Vec::with_capacity(512),
    })
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    .into_response()
}

/// An alert reader as SSE events, ending with one `end` event.
struct Feed {
    /// `None` once the `end` event was sent.
    reader: Option<AlertReader>,
    /// Reused for each alert's JSON.
    json: Vec<u8>,
}

fn resume_seq(end: &SubscriptionEnd) -> Option<u64> {
    match *end {
        SubscriptionEnd::Lagged { resume_seq, .. }
        | SubscriptionEnd::ReplayOverrun { resume_seq, .. }
        | SubscriptionEnd::JournalUnreadable { resume_seq, .. }
        | SubscriptionEnd::Lost { resume_seq, .. } => Some(resume_seq),
        SubscriptionEnd::Shutdown => None,
    }
}

impl tokio_stream::Stream for Feed {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match reader.poll_next_alert(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(alert))) => {
                this.json.clear();
                AlertJson::of(&alert).write_json(&mut this.json);
                let data = String::from_utf8_lossy(&this.json);
                let event = Event::default().id(alert.seq.to_string()).event("alert").data(data);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(end))) => {
                this.reader = None;
                let data = json!({ "reason": end.to_string(), "resume_seq": resume_seq(&end) }).to_string();
                Poll::Ready(Some(Ok(Event::default().event("end").data(data))))
            }
            Poll::Ready(None) => {
                this.reader = None;
                Poll::Ready(None)
            }
        }
    }
}
