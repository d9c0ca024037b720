//! Print the OpenAPI document: `cargo run -p hhh-proto --example openapi > proto/openapi.json`.
fn main() {
    println!("{}", serde_json::to_string_pretty(&hhh_proto::openapi::document()).expect("serializable"));
}
