//! The buyer's consent is kept in the order row and cannot be changed.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, stock_from_db};

#[actix_web::test]
async fn consent_is_kept_in_the_order_row_and_cannot_be_changed() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 600}))
        .await;
    let mut ids = Vec::new();
    for (key, customer) in [("k", "alice"), ("k2", "bob")] {
        let body = json!({"product_id": product, "quantity": 2, "customer_id": customer,
            "consent": {"terms_version": "tos-7", "marketing": customer == "alice"}});
        let order: Value = app
            .checkout(&store.storefront, key, &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], "reserved");
        ids.push(order["id"].as_str().unwrap().to_owned());
        if customer == "alice" {
            let expires =
                chrono::DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap())
                    .unwrap();
            let created =
                chrono::DateTime::parse_from_rfc3339(order["created_at"].as_str().unwrap())
                    .unwrap();
            assert_eq!((expires - created).num_seconds(), 600);
        }
    }
    let id = &ids[0];

    let db = app.db().await;
    let consent = "SELECT terms_version, marketing, host(client_addr), api_key_id IS NOT NULL \
                   FROM orders WHERE id = $1";
    let row = db.query_one(consent, &[id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "tos-7");
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "127.0.0.1");
    assert!(row.get::<_, bool>(3));
    // The audit trail shows it as its first entry; the audit table itself holds status
    // changes only.
    let trail = flashsale::db::orders::audit_trail(&db, id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].event.as_str(), trail[0].status.as_str()),
        ("created", "reserved")
    );
    assert_eq!(
        trail[0].detail,
        json!({"terms_version": "tos-7", "marketing": true})
    );
    let audit_rows: i64 = db
        .query_one("SELECT count(*) FROM order_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit_rows, 0);

    // Changing what the order was created with is refused by PostgreSQL, column by
    // column, even to the same value, and so is deleting it.
    for change in [
        "UPDATE orders SET terms_version = 'tos-8'",
        "UPDATE orders SET marketing = NOT marketing",
        "UPDATE orders SET client_addr = '10.0.0.1'",
        "UPDATE orders SET api_key_id = 'key_other'",
        "UPDATE orders SET created_at = now()",
        "UPDATE orders SET quantity = quantity",
        "UPDATE orders SET status = 'confirmed', terms_version = terms_version",
        "DELETE FROM orders",
    ] {
        let refused = db.execute(change, &[]).await;
        let error = refused.expect_err(change);
        let error = error.as_db_error().expect(change).message();
        assert!(error.contains("immutable"), "{change}: {error}");
    }
    assert!(db
        .execute("UPDATE order_audit SET event = 'x'", &[])
        .await
        .is_err());
    assert!(db.execute("DELETE FROM order_audit", &[]).await.is_err());

    // The service's own changes are status changes: confirm and cancel still work, and
    // each is in the trail after the consent record, which is as it was.
    let confirmed = app
        .post(
            &format!("/api/v1/orders/{id}/confirm"),
            &store.admin,
            &json!({"payment_reference": "pay_1"}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let cancelled = app
        .post(
            &format!("/api/v1/orders/{}/cancel", ids[1]),
            &store.admin,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let statuses: Vec<(String, String)> = db
        .query(
            "SELECT id, status FROM orders WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = vec![
        (ids[0].clone(), "confirmed".to_owned()),
        (ids[1].clone(), "cancelled".to_owned()),
    ];
    expected.sort();
    assert_eq!(statuses, expected);
    let row = db.query_one(consent, &[id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "tos-7");
    assert!(row.get::<_, bool>(1));
    let events: Vec<String> = flashsale::db::orders::audit_trail(&db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["created", "confirmed"]);
    let bob = flashsale::db::orders::audit_trail(&db, &ids[1])
        .await
        .unwrap();
    assert_eq!(bob[0].detail["marketing"], false);
    assert_eq!(bob.last().unwrap().event, "cancelled");
    assert_eq!(stock_from_db(&db, &product).await, (5, 3, 2, 1));
}
