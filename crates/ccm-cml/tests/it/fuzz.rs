use ccm_cml::models::{
    self, AuthExtendedResponse, ImportResponse, Lab, LabElementState, LicensingStatus,
    SystemHealth, SystemInformation, SystemStats, TelemetryEvent,
};
use ccm_cml::{CmlError, Endpoint, Secret};
use proptest::prelude::*;

/// Runs every decoder on `body`; each must return (never panic), and every error must be a
/// decode error naming its endpoint, with a bounded snippet.
fn decode_everything(body: &[u8]) -> usize {
    fn check<T: serde::de::DeserializeOwned>(endpoint: Endpoint, body: &[u8]) -> usize {
        match models::decode::<T>(endpoint, body) {
            Ok(_) => 0,
            Err(CmlError::Decode {
                endpoint: e,
                snippet,
                ..
            }) => {
                assert_eq!(e, endpoint);
                assert!(snippet.chars().count() <= 120, "{snippet}");
                1
            }
            Err(other) => panic!("{endpoint}: expected a decode error, got {other:?}"),
        }
    }
    let mut errors = 0;
    errors += check::<Secret>(Endpoint::Authenticate, body);
    errors += check::<AuthExtendedResponse>(Endpoint::AuthExtended, body);
    errors += check::<SystemInformation>(Endpoint::SystemInformation, body);
    errors += check::<SystemHealth>(Endpoint::SystemHealth, body);
    errors += check::<SystemStats>(Endpoint::SystemStats, body);
    errors += check::<LicensingStatus>(Endpoint::Licensing, body);
    errors += check::<Vec<String>>(Endpoint::Labs, body);
    errors += check::<Lab>(Endpoint::Lab, body);
    errors += check::<LabElementState>(Endpoint::LabElementState, body);
    errors += check::<ImportResponse>(Endpoint::Import, body);
    errors += check::<Vec<TelemetryEvent>>(Endpoint::TelemetryEvents, body);
    match models::decode_download(body) {
        Ok(_) | Err(CmlError::Decode { .. }) => {}
        Err(other) => panic!("download: expected a decode error, got {other:?}"),
    }
    errors
}

const EXAMPLES: [&str; 11] = [
    "authenticate.json",
    "auth_extended.json",
    "system_information.json",
    "system_health.json",
    "system_stats.json",
    "licensing.json",
    "labs.json",
    "lab.json",
    "import.json",
    "telemetry_events.json",
    "error.json",
];

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_truncation_of_every_example_should_give_a_decode_error_not_a_panic() {
    for name in EXAMPLES {
        let body = example(name);
        let trimmed = body.trim_ascii_end();
        for cut in 0..trimmed.len() {
            // Every decoder fails on a truncated document (11 JSON decoders).
            assert_eq!(
                decode_everything(&trimmed[..cut]),
                11,
                "{name} cut at {cut}"
            );
        }
    }
}

#[test]
fn a_truncated_login_answer_should_never_leak_the_token_in_the_error() {
    let body = example("authenticate.json");
    let cut = &body[..body.len() / 2];
    let err = models::decode::<Secret>(Endpoint::Authenticate, cut).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("eyJ"), "{text}");
    let body = example("auth_extended.json");
    let err =
        models::decode::<AuthExtendedResponse>(Endpoint::AuthExtended, &body[..body.len() - 3])
            .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("eyJ"));
}

#[test]
fn a_jwt_inside_another_answer_should_be_scrubbed_from_the_snippet() {
    let body = br#"{"version": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwIn0.c2lnbmF0dXJl", "ready": "#;
    let err = models::decode::<SystemInformation>(Endpoint::SystemInformation, body).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("eyJ0eXAi"), "{text}");
    assert!(text.contains("version"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_should_never_panic_a_decoder(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&body);
    }

    #[test]
    fn random_json_like_text_should_never_panic_a_decoder(body in r#"[\[\]{}":,0-9a-z_. \-nul]{0,200}"#) {
        decode_everything(body.as_bytes());
    }

    #[test]
    fn mutated_examples_should_never_panic_a_decoder(
        which in 0usize..EXAMPLES.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut body = example(EXAMPLES[which]);
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        decode_everything(&body);
    }
}
