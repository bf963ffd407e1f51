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
    SourceAdminError, Upstream, UpstreamKind,
};
use crate::{
    domain::{
        entry::PreparedEntry,
        outcome::{codes, Outcome},
    },
    sync::{read, write},
};

/// How the SDK clients are built: `[upstream]`, checked.
#[derive(Debug, Clone)]
pub struct SdkSettings {
    pub kind: UpstreamKind,
    /// Overrides the endpoint of every region (an emulator, moto).
    pub endpoint_url: Option<String>,
    /// The SDK's own attempts for a call that fails whole (see
    /// `upstream.sdk_max_attempts` for why 1).
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Bound on one call, SDK retries included.
    pub call_timeout: Duration,
}

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
        settings: &SdkSettings,
        endpoint_url: Option<&str>,
        regions: &[String],
    ) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            // PutPartnerEvents bodies are small and every call is bounded by
            // the operation timeout below; the SDK's stalled-stream checks
            // would only add a timer and a throughput tally to each call.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_timeout(settings.call_timeout)
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
        if let Some(c) = read(&self.clients).get(region) {
            return c.clone();
        }
        let conf = aws_sdk_eventbridge::config::Builder::from(&self.shared)
            .region(Region::new(region.to_string()))
            .build();
        let client = Client::from_conf(conf);
        write(&self.clients)
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
/// the connection could not be made (refused, unreachable, DNS, TLS, the
/// connect timeout). Decided by the error's type, never its text: the SDK's
/// HTTP client reports connect-phase failures as a `hyper_util` client
/// error of kind `Connect`, anywhere in the source chain. A connection that
/// broke after the request went out is not one of them.
fn is_connect_failure(err: &ConnectorError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
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
    ) -> BoxFuture<'a, Result<Option<Vec<SourceAccountInfo>>, SourceAdminError>> {
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
                        return Err(SourceAdminError {
                            operation: "ListPartnerEventSourceAccounts",
                            code: err.code().map(str::to_string),
                            message: None,
                        });
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
    ) -> BoxFuture<'a, Result<String, SourceAdminError>> {
        Box::pin(async move {
            let out = self
                .client(region)
                .create_partner_event_source()
                .name(name)
                .account(account)
                .send()
                .await
                .map_err(|err| SourceAdminError {
                    operation: "CreatePartnerEventSource",
                    code: err.code().map(str::to_string),
                    message: err.message().map(str::to_string),
                })?;
            Ok(out.event_source_arn().unwrap_or_default().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    //! How failed calls are classified, against real sockets on loopback.

    use std::time::Duration;

    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpSocket, TcpStream},
    };

    use super::*;
    use crate::domain::tenant::SourceRef;

    async fn upstream(addr: std::net::SocketAddr) -> EventBridgeUpstream {
        let settings = SdkSettings {
            kind: UpstreamKind::Emulator,
            endpoint_url: None,
            max_attempts: 1,
            connect_timeout: Duration::from_millis(300),
            call_timeout: Duration::from_millis(1_000),
        };
        EventBridgeUpstream::new(
            &settings,
            Some(&format!("http://{addr}")),
            &["us-east-1".to_string()],
        )
        .await
    }

    fn entry() -> PreparedEntry {
        PreparedEntry {
            index: 0,
            source: SourceRef::new("aws.partner/example.com/t/s", "us-east-1"),
            time: None,
            detail_type: "T".into(),
            detail: "{}".into(),
            resources: vec![],
            size: 30,
        }
    }

    async fn fail(addr: std::net::SocketAddr) -> CallError {
        upstream(addr)
            .await
            .put_partner_events("us-east-1", &[entry()])
            .await
            .expect_err("the call fails")
    }

    /// Reads a request's head (and whatever of its body came with it).
    async fn read_request(s: &mut TcpStream) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client sent a request");
            seen.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_sent() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let e = fail(addr).await;
        assert_eq!(e.kind, CallFailureKind::NotSent, "{e:?}");
        assert_eq!(e.code, codes::UPSTREAM_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_connect_timeout_was_not_sent() {
        // A listener with a backlog of one that never accepts: once its
        // queue is full, the kernel drops further SYNs and connecting hangs.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        let e = fail(addr).await;
        assert_eq!(e.kind, CallFailureKind::NotSent, "{e:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_connection_reset_mid_call_has_an_unknown_outcome() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            // An RST, not a FIN: SO_LINGER 0, then close.
            s.set_zero_linger().unwrap();
            drop(s);
        });
        let e = fail(addr).await;
        server.await.unwrap();
        assert_eq!(e.kind, CallFailureKind::Unknown, "{e:?}");
        assert_eq!(e.entry_code(), codes::OUTCOME_UNKNOWN);
    }

    #[tokio::test]
    async fn a_timeout_after_sending_has_an_unknown_outcome() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            // Holds the connection, answering nothing, until the test ends.
            let _ = held_rx.await;
        });
        let e = fail(addr).await;
        let _ = held_tx.send(());
        server.await.unwrap();
        assert_eq!(e.kind, CallFailureKind::Unknown, "{e:?}");
        assert_eq!(e.entry_code(), codes::OUTCOME_UNKNOWN);
    }
}
