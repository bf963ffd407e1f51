//! Every example config in deploy/ loads through the real config loader, and
//! the annotated example states the real defaults.

use std::path::Path;

use partner_events_gateway::config::{Config, RawConfig};

#[test]
fn every_example_config_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the example configs in deploy/");
}

#[test]
fn the_annotated_example_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gateway.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let example: RawConfig = toml::from_str(&text).unwrap();
    let default = RawConfig::default();
    assert_eq!(
        format!("{:?}", example.server),
        format!("{:?}", default.server)
    );
    assert_eq!(
        format!("{:?}", example.upstream),
        format!("{:?}", default.upstream)
    );
    assert_eq!(
        format!("{:?}", example.emulator),
        format!("{:?}", default.emulator)
    );
    assert_eq!(
        format!("{:?}", example.tenants),
        format!("{:?}", default.tenants)
    );
}
