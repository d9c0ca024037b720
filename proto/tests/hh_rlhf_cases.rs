//! The hh-rlhf parser against the shared fixture (the Python twin in scripts/hhhlib.py is
//! checked against the same file by tests/hh_rlhf_parity_test.py).

use hhh_proto::hh_rlhf::parse_transcript;

#[test]
fn parser_matches_the_shared_fixture() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hh_rlhf_cases.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture is JSON");
    assert!(cases.len() >= 10);
    for c in &cases {
        let got = parse_transcript(c["transcript"].as_str().expect("transcript")).map(|turns| turns.into_iter().map(|t| serde_json::json!([t.role, t.content])).collect::<Vec<_>>());
        let want = c["turns"].as_array().cloned();
        assert_eq!(got, want, "{}", c["name"]);
    }
}
