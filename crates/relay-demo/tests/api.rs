//! Every endpoint and error code of the API, against a real instance on 127.0.0.1:0, with a
//! real HTTP client and a real SSE parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use relay_demo::{FaultKind, seed_markers};
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn healthz_reports_version_and_rows() {
    let server = start(40, |o| o.version_label = "r0.5".into()).await;
    let body: Value = client()
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], "r0.5");
    assert_eq!(body["rows"], 200);
}

#[tokio::test]
async fn sse_stream_is_well_framed_and_ends_with_done() {
    let server = start(80, |_| {}).await;
    let outcome = query_sse(
        &server.url(),
        Some(&token("user_2")),
        json!({"query": "trip to Lisbon", "user_id": "user_2", "top_k": 5, "timeout_ms": 5000}),
    )
    .await;
    assert_eq!(outcome.status, 200);
    assert!(outcome.content_type.starts_with("text/event-stream"));
    assert!(!outcome.cut);
    let names: Vec<&str> = outcome.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        ["result", "result", "result", "result", "result", "done"]
    );
    // ids count up from 1; the first event carries the reconnection delay.
    let ids: Vec<&str> = outcome.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(outcome.events[0].retry, Some(Duration::from_millis(2000)));
    let results = outcome.results();
    for hit in &results {
        assert!(hit["id"].as_str().unwrap().starts_with("mem_"));
        assert!(hit["text"].is_string());
        assert!(hit["score"].is_number());
    }
    let scores: Vec<f64> = results
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let done: Value = serde_json::from_str(&outcome.events[5].data).unwrap();
    assert_eq!(done["count"], 5);
    assert!(done["latency_ms"].is_u64());
}

#[tokio::test]
async fn json_mode_returns_one_body_with_top_k_hits() {
    let server = start(80, |_| {}).await;
    let (status, headers, body) = query_json(
        &server.url(),
        Some(&token("user_1")),
        r#"{"query":"dentist appointment","user_id":"user_1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(headers["x-relay-version"], "r1");
    assert_eq!(body["count"], 24, "default top_k is 24");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 24);
    let top = results[0]["text"].as_str().unwrap().to_lowercase();
    assert!(
        top.contains("dentist"),
        "best hit should be about the dentist: {top}"
    );
}

#[tokio::test]
async fn bad_auth_is_401_with_www_authenticate() {
    let server = start(10, |_| {}).await;
    let body = r#"{"query":"x"}"#;
    let foreign =
        relay_demo::mint_token("another-secret", "user_1", Duration::from_secs(60)).unwrap();
    for token in [None, Some("not-a-jwt"), Some(foreign.as_str())] {
        let (status, headers, body) = query_json(&server.url(), token, body).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{token:?}"
        );
        assert_eq!(body["error"], "unauthorized");
    }
    // Ingest is protected the same way.
    let response = client()
        .post(format!("{}/api/v1/memory", server.url()))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn another_users_user_id_is_403_and_counted() {
    let server = start(10, |_| {}).await;
    let (status, _, body) = query_json(
        &server.url(),
        Some(&token("user_1")),
        r#"{"query":"x","user_id":"user_2"}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["field"], "user_id");
    let samples = parse_samples(&metrics_text(&server.url()).await);
    assert_eq!(sample(&samples, "memory_tenant_mismatch_total", ""), 1.0);
    assert_eq!(dirty_signals(&samples), ["memory_tenant_mismatch_total"]);
}

#[tokio::test]
async fn invalid_input_is_422_naming_the_field() {
    let server = start(10, |_| {}).await;
    let t = token("user_1");
    let cases = [
        (r#"{"user_id":"user_1"}"#, "query"),
        (r#"{"query":""}"#, "query"),
        (r#"{"query":42}"#, "query"),
        (r#"{"query":"x","top_k":0}"#, "top_k"),
        (r#"{"query":"x","top_k":101}"#, "top_k"),
        (r#"{"query":"x","top_k":"ten"}"#, "top_k"),
        (r#"{"query":"x","top_k":2.5}"#, "top_k"),
        (r#"{"query":"x","timeout_ms":0}"#, "timeout_ms"),
        (r#"{"query":"x","timeout_ms":-5}"#, "timeout_ms"),
        (r#"{"query":"x","user_id":7}"#, "user_id"),
        (r#"["query"]"#, "body"),
    ];
    for (body, field) in cases {
        let (status, _, reply) = query_json(&server.url(), Some(&t), body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(reply["field"], field, "{body}");
        assert_eq!(reply["error"], "invalid_field");
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    let (status, _, reply) = query_json(&server.url(), Some(&t), "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"], "malformed_body");
    // Boundaries are accepted.
    for body in [r#"{"query":"x","top_k":1}"#, r#"{"query":"x","top_k":100}"#] {
        assert_eq!(
            query_json(&server.url(), Some(&t), body).await.0,
            200,
            "{body}"
        );
    }
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    // One query in flight at a time; a slow first value keeps the first stream open.
    let server = start(10, |o| {
        o.max_concurrency = 1;
        o.faults = vec![relay_demo::Fault::always(FaultKind::SlowTtfv)];
    })
    .await;
    let url = server.url();
    let t = token("user_1");
    let held = tokio::spawn({
        let (url, t) = (url.clone(), t.clone());
        async move { query_sse(&url, Some(&t), json!({"query": "x", "timeout_ms": 10000})).await }
    });
    eventually(
        Duration::from_secs(10),
        "the first stream to open",
        || async {
            // Its ANN search ran, so it holds its admission (streams are counted when they end).
            let s = parse_samples(&metrics_text(&url).await);
            (sample(&s, "memory_ann_query_latency_ms_count", "") == 1.0).then_some(())
        },
    )
    .await;
    let (status, headers, body) = query_json(&url, Some(&t), r#"{"query":"y"}"#).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "overloaded");
    let first = held.await.unwrap();
    assert_eq!(
        first.last_event(),
        Some("done"),
        "the admitted stream still completes"
    );
}

#[tokio::test]
async fn exhausted_connection_pool_is_503() {
    // Two runaway jobs (each leaves one connection, the other takes it) hold the whole pool.
    let server = start(10, |o| {
        o.pool_size = 2;
        o.pool_acquire_timeout = Duration::from_millis(50);
        o.faults = vec![
            "pool-saturation".parse().unwrap(),
            "pool-saturation".parse().unwrap(),
        ];
    })
    .await;
    let url = server.url();
    eventually(Duration::from_secs(5), "the runaway jobs", || async {
        let s = parse_samples(&metrics_text(&url).await);
        (sample(&s, "db_connection_pool_utilization", "") >= 100.0).then_some(())
    })
    .await;
    let t = token("user_1");
    let (status, headers, body) = query_json(&url, Some(&t), r#"{"query":"a"}"#).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "overloaded");
    assert!(
        body["message"].as_str().unwrap().contains("pool exhausted"),
        "{body}"
    );
}

#[tokio::test]
async fn timeout_ends_the_stream_with_an_error_event_and_is_counted() {
    let server = start(10, |o| {
        o.faults = vec![relay_demo::Fault::always(FaultKind::SlowTtfv)]
    })
    .await;
    let outcome = query_sse(
        &server.url(),
        Some(&token("user_3")),
        json!({"query": "x", "timeout_ms": 300}),
    )
    .await;
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.last_event(), Some("error"));
    assert!(outcome.results().is_empty());
    let error: Value = serde_json::from_str(&outcome.events[0].data).unwrap();
    assert_eq!(error["error"], "timeout");
    assert!(
        outcome.elapsed < Duration::from_millis(1800),
        "ended at the deadline, not after the delay"
    );
    let samples = parse_samples(&metrics_text(&server.url()).await);
    assert_eq!(sample(&samples, "sse_stream_timeout_total", ""), 1.0);
    assert_eq!(sample(&samples, "sse_total", ""), 1.0);
    assert_eq!(sample(&samples, "sse_complete_total", ""), 0.0);
    // JSON mode answers 504 when the deadline passes.
    let (status, _, body) = query_json(
        &server.url(),
        Some(&token("user_3")),
        r#"{"query":"x","timeout_ms":300}"#,
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "timeout");
}

#[tokio::test]
async fn ingested_memory_is_found_by_its_owner_only() {
    let server = start(10, |_| {}).await;
    let url = server.url();
    let response = client()
        .post(format!("{url}/api/v1/memory"))
        .bearer_auth(token("user_4"))
        .json(
            &json!({"text": "Saxophone lesson moved to Thursday at Blue Note", "tags": ["music"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, _, mine) = query_json(
        &url,
        Some(&token("user_4")),
        r#"{"query":"saxophone lesson","top_k":1}"#,
    )
    .await;
    assert_eq!(mine["results"][0]["id"], id.as_str());
    let (_, _, theirs) = query_json(
        &url,
        Some(&token("user_5")),
        r#"{"query":"saxophone lesson","top_k":100}"#,
    )
    .await;
    assert!(!theirs.to_string().contains("Saxophone"));
    let samples = parse_samples(&metrics_text(&url).await);
    assert_eq!(sample(&samples, "memory_chunks_row_count", ""), 51.0);
    // Validation names the field here too.
    let bad = client()
        .post(format!("{url}/api/v1/memory"))
        .bearer_auth(token("user_4"))
        .json(&json!({"text": "x", "tags": "music"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "tags");
}

#[tokio::test]
async fn a_reranker_over_budget_is_skipped_and_counted() {
    let server = start(40, |o| o.rerank_budget = Duration::from_nanos(1)).await;
    let (status, _, body) = query_json(
        &server.url(),
        Some(&token("user_1")),
        r#"{"query":"dentist","top_k":3}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 3);
    let samples = parse_samples(&metrics_text(&server.url()).await);
    assert_eq!(sample(&samples, "memory_rerank_skipped_total", ""), 1.0);
    assert_eq!(sample(&samples, "memory_rerank_timeout_total", ""), 1.0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_streams() {
    let server = start(10, |o| {
        o.faults = vec![relay_demo::Fault::always(FaultKind::SlowTtfv)]
    })
    .await;
    let url = server.url();
    let open = tokio::spawn({
        let url = url.clone();
        async move {
            query_sse(
                &url,
                Some(&token("user_1")),
                json!({"query": "x", "top_k": 3, "timeout_ms": 10000}),
            )
            .await
        }
    });
    eventually(Duration::from_secs(5), "the stream to open", || async {
        let s = parse_samples(&metrics_text(&url).await);
        (sample(&s, "sse_total", "") == 1.0).then_some(())
    })
    .await;
    let stopping = tokio::spawn(server.shutdown());
    let outcome = open.await.unwrap();
    assert_eq!(outcome.last_event(), Some("done"), "{outcome:?}");
    assert_eq!(outcome.results().len(), 3);
    stopping.await.unwrap().unwrap();
    assert!(
        client().get(format!("{url}/healthz")).send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn every_seeded_user_finds_their_own_marker() {
    let server = start(60, |_| {}).await;
    for (user, marker) in seed_markers() {
        let body = json!({"query": marker, "user_id": user, "top_k": 1}).to_string();
        let (status, _, reply) = query_json(&server.url(), Some(&token(&user)), &body).await;
        assert_eq!(status, 200);
        assert!(
            reply["results"][0]["text"]
                .as_str()
                .unwrap()
                .contains(&marker),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_in_json() {
    let server = start(10, |_| {}).await;
    let url = server.url();
    let missing = client()
        .get(format!("{url}/api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("/api/v1/nope"));

    let wrong = client()
        .get(format!("{url}/api/v1/memory/query"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "POST");
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}
