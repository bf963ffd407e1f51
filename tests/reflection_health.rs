//! Health and server reflection (both versions), as grpcurl and Kubernetes
//! probes use them, through real generated clients.

mod common;

use common::TestGateway;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown() {
    let gw = TestGateway::start("").await;
    for service in ["", "partnerevents.v1.PartnerEvents"] {
        let status = common::health(&gw.channel, service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    let unknown = common::health(&gw.channel, "nope.Service")
        .await
        .unwrap_err();
    let mut health = HealthClient::new(gw.channel.clone());
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let stop = tokio::spawn(gw.gateway.shutdown());
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    drop(watch);
    stop.await.unwrap();
}

#[tokio::test]
async fn reflection_v1_lists_and_describes_everything_grpcurl_needs() {
    let gw = TestGateway::start("").await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "partnerevents.v1.PartnerEvents".into(),
                ),
            ),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "google.rpc.BadRequest".into(),
                ),
            ),
        },
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let list = answers.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        list.message_response
    else {
        panic!("expected a service list, got {list:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "partnerevents.v1.PartnerEvents",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    for symbol in ["partnerevents.v1.PartnerEvents", "google.rpc.BadRequest"] {
        let r = answers.next().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) =
            r.message_response
        else {
            panic!("no descriptor for {symbol}: {r:?}");
        };
        assert!(!f.file_descriptor_proto.is_empty());
    }
    // The proto comments travel with the descriptor (grpcurl describe shows them).
    let ours = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "partnerevents.v1.PartnerEventEntry".into(),
            ),
        ),
    };
    let r = client
        .server_reflection_info(tokio_stream::iter(vec![ours]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) =
        r.message_response
    else {
        panic!("no descriptor: {r:?}");
    };
    let bytes: Vec<u8> = f.file_descriptor_proto.concat();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("What kind of event this is"),
        "comments missing from the descriptor"
    );
}

#[tokio::test]
async fn reflection_v1alpha_answers_for_old_grpcurl() {
    let gw = TestGateway::start("").await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(gw.channel.clone());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let r = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        r.message_response
    else {
        panic!("expected a service list, got {r:?}");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "partnerevents.v1.PartnerEvents"));
}
