//! HTTP caching of every variant (RFC 9111): each `?fields=` variant has its own
//! validators and 304; every per-key answer says `Vary: Authorization`; `/metrics` can
//! require its token.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[actix_web::test]
async fn each_fields_variant_has_its_own_validators_and_304() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    let base = format!("/api/v1/products/{product}");
    let full = app.get(&base, &store.storefront).await;
    let full_tag = full.headers()["etag"].to_str().unwrap().to_owned();
    let a = app
        .get(&format!("{base}?fields=id,name"), &store.storefront)
        .await;
    assert_eq!(a.status(), 200);
    for h in ["etag", "last-modified", "cache-control"] {
        assert!(
            a.headers().contains_key(h),
            "{h} missing on a ?fields= read"
        );
    }
    assert_eq!(a.headers()["vary"], "Authorization");
    let a_tag = a.headers()["etag"].to_str().unwrap().to_owned();
    // The same fields in another order are the same variant; other fields another.
    let a2 = app
        .get(&format!("{base}?fields=name,id"), &store.storefront)
        .await;
    assert_eq!(a2.headers()["etag"].to_str().unwrap(), a_tag);
    let b = app
        .get(&format!("{base}?fields=stock_available"), &store.storefront)
        .await;
    let b_tag = b.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(a_tag, full_tag);
    assert_ne!(a_tag, b_tag);

    // Its own tag revalidates it; another variant's does not.
    let r = app
        .get_if_none_match(&format!("{base}?fields=id,name"), &store.storefront, &a_tag)
        .await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), a_tag);
    let r = app
        .get_if_none_match(
            &format!("{base}?fields=id,name"),
            &store.storefront,
            &full_tag,
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .get_if_none_match(&base, &store.storefront, &a_tag)
        .await;
    assert_eq!(r.status(), 200);

    // A change gives every variant a new tag.
    let sold = app
        .checkout(
            &store.storefront,
            "k1",
            &crate::helpers::checkout_body(&product, 1, "c"),
        )
        .await;
    assert_eq!(sold.status(), 201);
    let mut fresh = None;
    for _ in 0..50 {
        let r = app
            .get_if_none_match(
                &format!("{base}?fields=stock_available"),
                &store.storefront,
                &b_tag,
            )
            .await;
        if r.status() == 200 {
            fresh = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        fresh.expect("the old tag kept matching"),
        json!({"stock_available": 4})
    );
}

#[actix_web::test]
async fn answers_that_depend_on_the_key_vary_on_authorization() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    for path in [
        format!("/api/v1/products/{product}"),
        format!("/api/v1/products/{product}?fields=id"),
        format!("/api/v1/products/{product}/stock"),
        "/api/v1/products".to_owned(),
        "/api/v1/drops".to_owned(),
    ] {
        let r = app.get(&path, &store.storefront).await;
        assert_eq!(r.status(), 200, "{path}");
        let cc = r.headers()["cache-control"].to_str().unwrap();
        assert!(
            cc.contains("public") && cc.contains("max-age=1"),
            "{path}: {cc}"
        );
        let vary = r.headers()["vary"].to_str().unwrap();
        assert!(vary.contains("Authorization"), "{path}: {vary}");
    }
    // Stock is never served stale: no stale-* extension.
    let r = app
        .get(
            &format!("/api/v1/products/{product}/stock"),
            &store.storefront,
        )
        .await;
    assert!(!r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("stale"));
}

#[actix_web::test]
async fn metrics_require_their_token_when_one_is_set() {
    let app = spawn_app_with(|s| s.metrics_token = Some("m3tr1cs-t0ken".into())).await;
    let url = app.url("/metrics");
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_problem(none, 401, "unauthorized").await;
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 401, "unauthorized").await;
    // A store's key is not the metrics token either.
    let store = app.create_store().await;
    let key = app
        .client
        .get(&url)
        .bearer_auth(&store.admin)
        .send()
        .await
        .unwrap();
    assert_problem(key, 401, "unauthorized").await;
    let right = app
        .client
        .get(&url)
        .bearer_auth("m3tr1cs-t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right
        .text()
        .await
        .unwrap()
        .contains("flashsale_http_requests_total"));
    // Health stays open for probes.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Without a token set, /metrics is open (as before).
    let open = spawn_app().await;
    let r = open.client.get(open.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
