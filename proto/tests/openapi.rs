//! The committed OpenAPI document is the one the wire types generate, and it documents exactly
//! the routes the server serves (read from the router's source).

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn committed_document_is_current() {
    // Compared as JSON values: key order depends on serde_json's `preserve_order` feature, which
    // a dependency elsewhere in the workspace (llguidance) turns on.
    let want = serde_json::to_value(hhh_proto::openapi::document()).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_default();
    assert!(got == want, "proto/openapi.json is stale: run `cargo run -p hhh-proto --example openapi > proto/openapi.json`");
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let mut served = BTreeSet::new();
    for router in ["../server/api/src/lib.rs", "../server/batch/src/routes.rs"] {
        let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(router)).unwrap();
        served.extend(src.split(".route(\"").skip(1).filter_map(|s| s.split('"').next()).map(String::from));
    }
    assert!(served.len() >= 15, "{served:?}");
    let doc = hhh_proto::openapi::document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(served, documented);
    // Every $ref resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
    }
}
