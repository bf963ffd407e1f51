//! The EventBridge adapter: [`Upstream`] over `aws-sdk-eventbridge`, one SDK
//! client per region, built from one shared `aws-config` load.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use aws_config::{
    retry::RetryConfig, stalled_stream_protection::StalledStreamProtectionConfig,
    timeout::TimeoutConfig, BehaviorVersion, Region,
};
use aws_sdk_eventbridge::{
    error::{ConnectorError, ProvideErrorMetadata, SdkError},
    types::PutPartnerEventsRequestEntry,
    Client,
};
use aws_smithy_types::DateTime;
use futures::future::BoxFuture;

use super::{
    attribute_results, CallError, CallFailureKind, RawResult, SourceAccountInfo, SourceAdmin,
    Upstream,
};
use crate::{
    config::{UpstreamKind, UpstreamSection},
    domain::{
        entry::PreparedEntry,
        outcome::{codes, Outcome},
    },
};

/// Calls EventBridge through the AWS SDK.
pub struct EventBridgeUpstream {
    shared: aws_config::SdkConfig,
    clients: RwLock<HashMap<String, Client>>,
}

impl EventBridgeUpstream {
    /// Loads the AWS configuration and builds a client for each of `regions`.
    ///
    /// `endpoint_url` overrides the endpoint of every region (an emulator,
    /// moto). With [`UpstreamKind::Emulator`] the calls are signed with dummy
    /// credentials, since an emulator checks no signature; with
    /// [`UpstreamKind::Aws`] credentials come from the standard chain.
    pub async fn new(
        settings: &UpstreamSection,
        endpoint_url: Option<&str>,
        regions: &[String],
    ) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.sdk_max_attempts))
            // PutPartnerEvents bodies are small and every call is bounded by
            // the operation timeout below; the SDK's stalled-stream checks
            // would only add a timer and a throughput tally to each call.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
                    .operation_timeout(Duration::from_millis(settings.call_timeout_ms))
                    .build(),
            );
        // Each client sets its own region; giving the loader one spares it a
        // region lookup (which would try IMDS off EC2 and stall start-up).
        if let Some(first) = regions.first() {
            loader = loader.region(Region::new(first.clone()));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if settings.kind == UpstreamKind::Emulator {
            loader = loader.credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
                "emulator", "emulator", None, None, "emulator",
            ));
        }
        let shared = loader.load().await;
        let this = Self {
            shared,
            clients: RwLock::new(HashMap::new()),
        };
        for r in regions {
            this.client(r);
        }
        this
    }

    /// The client for `region`, built on first use.
    fn client(&self, region: &str) -> Client {
        if let Some(c) = self.clients.read().expect("lock").get(region) {
            return c.clone();
        }
        let conf = aws_sdk_eventbridge::config::Builder::from(&self.shared)
            .region(Region::new(region.to_string()))
            .build();
        let client = Client::from_conf(conf);
        self.clients
            .write()
            .expect("lock")
            .entry(region.to_string())
            .or_insert(client)
            .clone()
    }
}

fn to_sdk_entry(e: &PreparedEntry) -> PutPartnerEventsRequestEntry {
    PutPartnerEventsRequestEntry::builder()
        .source(e.source.name())
        .detail_type(&e.detail_type)
        .detail(&e.detail)
        .set_resources((!e.resources.is_empty()).then(|| e.resources.clone()))
        .set_time(e.time.map(DateTime::from_secs))
        .build()
}

impl Upstream for EventBridgeUpstream {
    fn put_partner_events<'a>(
        &'a self,
        region: &'a str,
        entries: &'a [PreparedEntry],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, CallError>> {
        Box::pin(async move {
            let client = self.client(region);
            let sdk_entries = entries.iter().map(to_sdk_entry).collect();
            match client
                .put_partner_events()
                .set_entries(Some(sdk_entries))
                .send()
                .await
            {
                Ok(out) => {
                    let raw = out
                        .entries()
                        .iter()
                        .map(|r| RawResult {
                            event_id: r.event_id().map(str::to_string),
                            error_code: r.error_code().map(str::to_string),
                            error_message: r.error_message().map(str::to_string),
                        })
                        .collect();
                    Ok(attribute_results(
                        entries.len(),
                        out.failed_entry_count(),
                        raw,
                    ))
                }
                Err(err) => {
                    let e = classify_sdk_error(&err);
                    tracing::warn!(
                        region,
                        entries = entries.len(),
                        code = %e.code,
                        kind = ?e.kind,
                        error = %aws_smithy_types::error::display::DisplayErrorContext(&err),
                        "EventBridge call failed"
                    );
                    Err(e)
                }
            }
        })
    }
}

/// Maps an SDK error to what the entries are told.
fn classify_sdk_error<E, R>(err: &SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or(codes::UPSTREAM_ERROR).to_string();
            let message = match se.err().code() {
                Some(c) => format!("EventBridge rejected the call: {c}"),
                None => "EventBridge failed the call with an answer that carried no error code"
                    .to_string(),
            };
            CallError {
                kind: CallFailureKind::Rejected,
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) => CallError {
            kind: CallFailureKind::Unknown,
            code: codes::OUTCOME_UNKNOWN.into(),
            message: "the EventBridge call timed out after it was sent; the entries may or may \
                      not have been accepted, and resending may duplicate them"
                .into(),
        },
        SdkError::DispatchFailure(df)
            if df.as_connector_error().is_some_and(is_connect_failure) =>
        {
            CallError {
                kind: CallFailureKind::NotSent,
                code: codes::UPSTREAM_UNAVAILABLE.into(),
                message: "could not connect to EventBridge; the entries were not sent".into(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => CallError {
            kind: CallFailureKind::Unknown,
            code: codes::OUTCOME_UNKNOWN.into(),
            message: "the connection to EventBridge broke before a usable answer came back; the \
                      entries may or may not have been accepted, and resending may duplicate them"
                .into(),
        },
        _ => CallError {
            kind: CallFailureKind::NotSent,
            code: codes::UPSTREAM_ERROR.into(),
            message: "the EventBridge call could not be built; the entries were not sent".into(),
        },
    }
}

/// Whether a dispatch failure happened before the request could be written:
/// a refused or unreachable connection.
fn is_connect_failure(err: &ConnectorError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("connection refused")
            || text.contains("error trying to connect")
            || text.contains("dns error")
            || text.contains("tcp connect")
        {
            return true;
        }
        source = e.source();
    }
    false
}

impl SourceAdmin for EventBridgeUpstream {
    fn list_source_accounts<'a>(
        &'a self,
        region: &'a str,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<SourceAccountInfo>>, String>> {
        Box::pin(async move {
            let client = self.client(region);
            let mut accounts = Vec::new();
            let mut next: Option<String> = None;
            // A source serves one account; the pages are few. Bounded anyway.
            for _ in 0..100 {
                let out = match client
                    .list_partner_event_source_accounts()
                    .event_source_name(source)
                    .set_next_token(next.take())
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(err) => {
                        if err.code() == Some("ResourceNotFoundException") {
                            return Ok(None);
                        }
                        return Err(format!(
                            "ListPartnerEventSourceAccounts failed: {}",
                            err.code().unwrap_or("no error code")
                        ));
                    }
                };
                accounts.extend(out.partner_event_source_accounts().iter().map(|a| {
                    SourceAccountInfo {
                        account: a.account().unwrap_or_default().to_string(),
                        state: a
                            .state()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                        creation_time: a.creation_time().map(|t| t.secs()),
                        expiration_time: a.expiration_time().map(|t| t.secs()),
                    }
                }));
                match out.next_token() {
                    Some(t) if !t.is_empty() => next = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok(Some(accounts))
        })
    }

    fn create_source<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        account: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let out = self
                .client(region)
                .create_partner_event_source()
                .name(name)
                .account(account)
                .send()
                .await
                .map_err(|err| {
                    format!(
                        "CreatePartnerEventSource failed: {}{}",
                        err.code().unwrap_or("no error code"),
                        err.message().map(|m| format!(": {m}")).unwrap_or_default()
                    )
                })?;
            Ok(out.event_source_arn().unwrap_or_default().to_string())
        })
    }
}
