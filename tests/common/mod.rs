//! Test harness: the real gateway on a loopback port, its in-process
//! emulator, and a generated tonic client.
#![allow(dead_code)]

use partner_events_gateway::{
    config::Config,
    emulator::EmulatorHandle,
    proto::{
        partner_event_entry::Body, partner_events_client::PartnerEventsClient, PartnerEventEntry,
        PutPartnerEventsRequest,
    },
    server::{self, RunningGateway},
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// A demo-like tenant directory with two sources in two regions.
pub const TENANTS: &str = r#"
[tenants.acme]
default_source = "billing"
[tenants.acme.sources.billing]
name = "aws.partner/example.com/acme/billing"
region = "us-east-1"
[tenants.acme.sources.audit]
name = "aws.partner/example.com/acme/audit"
region = "eu-west-1"
"#;

pub struct TestGateway {
    pub gateway: RunningGateway,
    pub client: PartnerEventsClient<Channel>,
    pub channel: Channel,
}

impl TestGateway {
    /// Starts a gateway from TOML (the `[tenants]` above are appended when
    /// the text has none) on 127.0.0.1:0.
    pub async fn start(toml: &str) -> Self {
        let text = if toml.contains("[tenants.") {
            toml.to_string()
        } else {
            format!("{toml}\n{TENANTS}")
        };
        let config = Config::from_toml(&text, "test").expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = server::start(config, listener)
            .await
            .expect("gateway starts");
        let channel = Channel::from_shared(format!("http://{}", gateway.local_addr()))
            .unwrap()
            .connect()
            .await
            .expect("client connects");
        Self {
            client: PartnerEventsClient::new(channel.clone()),
            channel,
            gateway,
        }
    }

    pub fn emulator(&self) -> &EmulatorHandle {
        self.gateway
            .emulator()
            .expect("the gateway runs its own emulator")
    }

    pub async fn stop(self) {
        assert!(self.gateway.shutdown().await, "gateway drained cleanly");
    }
}

/// An entry with a JSON-text detail.
pub fn entry(detail_type: &str, detail: &str) -> PartnerEventEntry {
    PartnerEventEntry {
        time: None,
        detail_type: detail_type.to_string(),
        body: Some(Body::Detail(detail.to_string())),
        resources: vec![],
        source_key: String::new(),
    }
}

pub fn request(tenant: &str, entries: Vec<PartnerEventEntry>) -> PutPartnerEventsRequest {
    PutPartnerEventsRequest {
        tenant_id: tenant.to_string(),
        entries,
        batch_id: "b-1".to_string(),
    }
}
