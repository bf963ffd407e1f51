//! The test harness's own Redis (tests/common/redis.rs) does what the
//! cluster-mode tests rely on: it answers, it stops (connections refused),
//! and it comes back on the same port.

mod common;

use std::io::ErrorKind;

use common::redis::{ping, RedisServer};

#[test]
fn a_test_redis_stops_and_comes_back_on_its_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(&ping(port).unwrap(), b"+PONG\r\n");

    redis.stop();
    let refused = ping(port).expect_err("a stopped Redis answers nothing");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(&ping(port).unwrap(), b"+PONG\r\n");
}
