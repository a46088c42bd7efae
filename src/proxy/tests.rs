use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;

async fn call(method: &str, path: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let app = router(Upstream::Local, Arc::new(ProxyStats::default()));
    let r = app
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn local_mode_samples_everything() {
    let (status, rules) = call("POST", "/GetSamplingRules", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let rule = &rules["SamplingRuleRecords"][0]["SamplingRule"];
    assert_eq!(rule["FixedRate"], 1.0);
    assert_eq!(rule["ServiceName"], "*");

    let stats = br#"{"SamplingStatisticsDocuments":[{"RuleName":"Default","ClientID":"abc","RequestCount":3,"SampledCount":1,"BorrowCount":0,"Timestamp":1.0}]}"#;
    let (status, targets) = call("POST", "/SamplingTargets", stats.to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(targets["SamplingTargetDocuments"][0]["RuleName"], "Default");
    assert_eq!(targets["SamplingTargetDocuments"][0]["FixedRate"], 1.0);
    let (status, _) = call("POST", "/SamplingTargets", b"not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn only_the_two_sampling_calls_are_served() {
    for (method, path) in [
        ("POST", "/TraceSegments"),
        ("POST", "/GetSamplingStatisticSummaries"),
        ("GET", "/GetSamplingRules"),
        ("PUT", "/SamplingTargets"),
        ("POST", "/"),
        ("POST", "/GetSamplingRules/extra"),
    ] {
        let (status, body) = call(method, path, b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains("only POST"));
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    let (status, body) = call("POST", "/SamplingTargets", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["message"].as_str().unwrap().contains("over"));
}
