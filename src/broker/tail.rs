//! `affectstream tail`: the published records (or events) as JSON lines, as they arrive.
//! Without `--durable` an ephemeral ordered consumer starts at new messages; with it, a durable
//! pull consumer (explicit acks) resumes where it left off, and starts at the oldest message
//! the stream keeps the first time.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::{BrokerError, EVENTS_STREAM, RECORDS_STREAM, names};

/// What to follow.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// Only this camera.
    pub camera: Option<String>,
    /// The events stream instead of the records.
    pub events: bool,
    /// A durable consumer of this name.
    pub durable: Option<String>,
    /// Exit once nothing has arrived for this long (scripts, tests).
    pub idle_exit: Option<Duration>,
}

impl TailOptions {
    fn filter(&self) -> String {
        let camera = self.camera.as_deref().unwrap_or(">");
        if self.events {
            format!("affect.evt.{camera}")
        } else {
            format!("affect.rec.{camera}")
        }
    }
}

/// Writes every message's payload as a line to `out` until `idle_exit` (or forever).
pub async fn tail(
    js: &jetstream::Context,
    opts: &TailOptions,
    mut out: impl Write,
) -> Result<u64, BrokerError> {
    if let Some(camera) = &opts.camera {
        names::check_name("camera", camera).map_err(BrokerError::Registry)?;
    }
    if let Some(durable) = &opts.durable {
        names::check_name("durable consumer", durable).map_err(BrokerError::Registry)?;
    }
    super::ensure_streams(js)
        .await
        .map_err(BrokerError::Registry)?;
    let name = if opts.events {
        EVENTS_STREAM
    } else {
        RECORDS_STREAM
    };
    let stream = js
        .get_stream(name)
        .await
        .map_err(|e| BrokerError::Registry(format!("cannot open the stream {name}: {e}")))?;
    let filter = opts.filter();
    let mut written = 0u64;
    let idle = opts.idle_exit.unwrap_or(Duration::MAX);
    match &opts.durable {
        None => {
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: js_inbox(js),
                    filter_subject: filter,
                    deliver_policy: consumer::DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| BrokerError::Registry(format!("cannot follow {name}: {e}")))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| BrokerError::Registry(format!("cannot follow {name}: {e}")))?;
            while let Ok(Some(message)) = tokio::time::timeout(idle, messages.next()).await {
                let message =
                    message.map_err(|e| BrokerError::Registry(format!("following {name}: {e}")))?;
                write_line(&mut out, &message.payload)?;
                written += 1;
            }
        }
        Some(durable) => {
            let config = consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: filter.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 4096,
                ..Default::default()
            };
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(durable, config)
                .await
                .map_err(|e| {
                    BrokerError::Registry(format!("cannot open the consumer '{durable}': {e}"))
                })?;
            let existing = &consumer.cached_info().config.filter_subject;
            if *existing != filter {
                return Err(BrokerError::Registry(format!(
                    "the durable consumer '{durable}' follows '{existing}', not '{filter}': \
                     use another --durable name"
                )));
            }
            let mut messages = consumer.messages().await.map_err(|e| {
                BrokerError::Registry(format!("cannot follow the consumer '{durable}': {e}"))
            })?;
            while let Ok(Some(message)) = tokio::time::timeout(idle, messages.next()).await {
                let message = match message {
                    Ok(m) => m,
                    // Heartbeats missed while the server restarts: the stream carries on.
                    Err(e) => {
                        tracing::warn!("consumer '{durable}': {e}");
                        continue;
                    }
                };
                write_line(&mut out, &message.payload)?;
                written += 1;
                // Acknowledged once written: a crash in between re-delivers (at least once).
                if let Err(e) = message.ack().await {
                    tracing::debug!("ack failed (the message comes again): {e}");
                }
            }
        }
    }
    out.flush()?;
    Ok(written)
}

fn js_inbox(js: &jetstream::Context) -> String {
    js.client().new_inbox()
}

fn write_line(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(payload)?;
    out.write_all(b"\n")?;
    out.flush()
}
