//! TLS, mutual TLS, bearer tokens and the authorization table, through real
//! clients, with certificates generated at test time (rcgen).

mod common;

use common::{entry, free_port, pki, request, tls_channel, Pki, TestGateway, BILLING};
use partner_events_gateway::proto::partner_events_client::PartnerEventsClient;
use sha2::Digest;
use tonic::{
    transport::{Channel, Identity},
    Code, Request,
};
use tonic_health::pb::health_check_response::ServingStatus;

fn config(pki: &Pki, health_port: u16) -> String {
    let d = pki.dir.display();
    let ops_hash = hex::encode(sha2::Sha256::digest(b"ops-token"));
    format!(
        r#"
[server]
health_listen = "127.0.0.1:{health_port}"
[tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
client_ca_file = "{d}/ca.pem"
[auth]
mode = "required"
[[auth.tokens]]
caller = "ops"
sha256 = "{ops_hash}"
[auth.callers."{BILLING}"]
tenants = ["acme"]
[auth.callers."ops"]
tenants = ["*"]
{}
"#,
        common::TENANTS
    )
}

async fn tls_client(
    gw: &TestGateway,
    pki: &Pki,
    identity: Option<Identity>,
) -> PartnerEventsClient<Channel> {
    PartnerEventsClient::new(tls_channel(gw.gateway.local_addr(), &pki.ca_pem, identity).await)
}

#[tokio::test]
async fn mtls_identity_is_authorized_per_tenant() {
    let pki = pki();
    let gw = TestGateway::start_unconnected(&config(&pki, free_port())).await;

    let mut billing = tls_client(&gw, &pki, Some(pki.billing.clone())).await;
    let ok = billing
        .put_partner_events(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.failed_entry_count, 0);

    let denied = billing
        .put_partner_events(request("initech", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains(BILLING));

    let mut intruder = tls_client(&gw, &pki, Some(pki.intruder.clone())).await;
    let denied = intruder
        .put_partner_events(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // TLS without a client certificate and without a token: no identity.
    let mut anonymous = tls_client(&gw, &pki, None).await;
    let err = anonymous
        .put_partner_events(request("acme", vec![entry("A", "{}")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A stream is refused at once without an identity.
    let err = anonymous
        .stream_partner_events(tokio_stream::iter(vec![request(
            "acme",
            vec![entry("A", "{}")],
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    assert_eq!(
        gw.emulator().events().len(),
        1,
        "only the allowed call reached EventBridge"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bearer_tokens_identify_callers() {
    let pki = pki();
    let gw = TestGateway::start_unconnected(&config(&pki, free_port())).await;
    let mut client = tls_client(&gw, &pki, None).await;
    let with_token = |token: &str, tenant: &str| {
        let mut r = Request::new(request(tenant, vec![entry("A", "{}")]));
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let ok = client
        .put_partner_events(with_token("ops-token", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.failed_entry_count, 0);
    let err = client
        .put_partner_events(with_token("wrong", "acme"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    gw.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_on_the_tls_port_and_health_has_its_own_port() {
    let pki = pki();
    let health_port = free_port();
    let gw = TestGateway::start_unconnected(&config(&pki, health_port)).await;
    let plaintext = Channel::from_shared(format!("http://{}", gw.gateway.local_addr()))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let err = PartnerEventsClient::new(channel)
            .put_partner_events(request("acme", vec![entry("A", "{}")]))
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }
    let channel = Channel::from_shared(format!("http://127.0.0.1:{health_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = common::health(&channel, "partnerevents.v1.PartnerEvents")
        .await
        .unwrap();
    assert_eq!(
        status,
        ServingStatus::Serving,
        "SERVING on the plaintext health port"
    );
    gw.stop().await;
    std::fs::remove_dir_all(&pki.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_works_over_mutual_tls() {
    let pki = pki();
    let gw = TestGateway::start_unconnected(&config(&pki, free_port())).await;
    let d = pki.dir.clone();
    let input = d.join("in.jsonl");
    std::fs::write(&input, "{\"DetailType\":\"A\",\"Detail\":{\"n\":1}}\n").unwrap();
    let port = gw.gateway.local_addr().port();
    let run = |cert: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_partner-events-gateway"))
            .args([
                "send",
                "--tenant",
                "acme",
                "--addr",
                &format!("https://localhost:{port}"),
            ])
            .arg("--ca-cert")
            .arg(d.join("ca.pem"))
            .arg("--client-cert")
            .arg(d.join(format!("{cert}.pem")))
            .arg("--client-key")
            .arg(d.join(format!("{cert}.key")))
            .arg("--file")
            .arg(&input)
            .output()
            .unwrap()
    };
    let ok = run("billing");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("event_id"));
    let denied = run("intruder");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stdout).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&denied.stdout)
    );
    gw.stop().await;
}
