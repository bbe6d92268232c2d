//! The OpenAPI document tells the whole truth: every operation lists the shared answers
//! (with the problem schema and their headers). schemathesis checks it against the live
//! API in CI (loadtests/schemathesis.sh); this checks the document itself.

use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn every_operation_documents_its_problems_and_their_headers() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            // The document itself and its HTML rendering are static and open to all.
            if !path.starts_with("/api/v1/")
                || ["/api/v1/openapi.json", "/api/v1/docs"].contains(&path.as_str())
            {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            let name = format!("{method} {path}");
            for status in ["401", "403", "422", "429", "503"] {
                assert!(has(status), "{name} does not document {status}");
            }
            if path.contains('{') {
                assert!(has("404"), "{name} does not document 404");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413"] {
                    assert!(has(status), "{name} does not document {status}");
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{name} {status}"
                    );
                }
            }
            assert!(
                responses["503"]["headers"]["Retry-After"].is_object(),
                "{name}"
            );
            for h in [
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ] {
                assert!(responses["429"]["headers"][h].is_object(), "{name} 429 {h}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} operations");
    let page = &paths["/api/v1/products/{id}"]["get"]["responses"];
    for h in ["ETag", "Last-Modified", "Cache-Control", "Vary"] {
        assert!(page["200"]["headers"][h].is_object(), "product page {h}");
    }
    let checkout = &paths["/api/v1/checkout"]["post"]["responses"]["201"]["headers"];
    assert!(checkout["Idempotent-Replayed"].is_object());
}
