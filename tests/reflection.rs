//! grpcurl-style clients need no `.proto`: every service lists its services through server
//! reflection, in both protocol versions still in use.

use userctl_tests::{database::TestDatabase, redis::RedisServer, stack::TestStack};

/// The services `addr` lists through reflection v1 and v1alpha, sorted.
async fn listed(addr: &str) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};

    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .expect("address")
        .connect()
        .await
        .expect("connect");

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1")
        .into_inner();
    let reply = stream
        .message()
        .await
        .expect("v1 reply")
        .expect("one message");
    let mut v1_names: Vec<String> = match reply.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1 reply: {other:?}"),
    };

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let reply = stream
        .message()
        .await
        .expect("v1alpha reply")
        .expect("one message");
    let mut v1alpha_names: Vec<String> = match reply.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha reply: {other:?}"),
    };
    v1_names.sort();
    v1alpha_names.sort();
    (v1_names, v1alpha_names)
}

#[tokio::test]
async fn every_service_lists_its_api_health_and_reflection_in_both_versions() {
    let db = TestDatabase::sqlite();
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    for (addr, own) in [
        (&stack.gateway_addr, vec!["userctl.gateway.v1.Gateway"]),
        (
            &stack.cache_addr,
            vec!["userctl.cache.v1.CacheStats", "userctl.user.v1.UserStore"],
        ),
        (&stack.store_addr, vec!["userctl.user.v1.UserStore"]),
    ] {
        let (v1, v1alpha) = listed(addr).await;
        // Exactly what the server serves: its API, health, its figures and that version of
        // reflection.
        for (version, listed) in [("v1", v1), ("v1alpha", v1alpha)] {
            let mut expected: Vec<String> = own.iter().map(|name| (*name).to_owned()).collect();
            expected.push("grpc.health.v1.Health".into());
            // Every service's figures per RPC, for the dashboard.
            expected.push("userctl.requests.v1.Requests".into());
            expected.push(format!("grpc.reflection.{version}.ServerReflection"));
            expected.sort();
            assert_eq!(listed, expected, "{addr} over reflection {version}");
        }
    }
}
