//! A body that arrives in pieces is read whole: a chunked checkout, its chunks sent with
//! pauses between them over a raw socket, is the same request as one sent at once; a
//! chunked body past the limit, with no Content-Length to refuse it by, is a 413.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{checkout_body, spawn_app, stock_from_db};

/// Sends a chunked `POST /api/v1/checkout`, one chunk per piece with a pause after each,
/// and returns the answer's status and the text after its head.
async fn checkout_in_pieces(
    address: &str,
    token: &str,
    key: &str,
    pieces: &[&[u8]],
) -> (u16, String) {
    let mut socket = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /api/v1/checkout HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        // The server may answer (413) and close before the last pieces: not an error.
        if socket.write_all(&chunk).await.is_err() {
            break;
        }
        socket.flush().await.ok();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    socket.write_all(b"0\r\n\r\n").await.ok();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.ok();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let rest = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, r)| r)
        .to_owned();
    (status, rest)
}

#[actix_web::test]
async fn a_body_in_pieces_is_read_whole_and_bounded() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, serde_json::json!({})).await;
    let address = app.address.to_string();

    let body = serde_json::to_vec(&checkout_body(&product, 2, "alice")).unwrap();
    let (a, b) = body.split_at(7);
    let (b, c) = b.split_at(b.len() / 2);
    let (status, answer) =
        checkout_in_pieces(&address, &store.storefront, "pieces-1", &[a, b, c]).await;
    assert_eq!(status, 201, "a body in three chunks: {answer}");
    assert!(answer.contains("\"customer_id\":\"alice\""), "{answer}");

    // The same key and body sent at once is the same request: replayed, not bought again.
    let replay = app
        .checkout(
            &store.storefront,
            "pieces-1",
            &checkout_body(&product, 2, "alice"),
        )
        .await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["customer_id"], "alice");

    // Past the limit (64 KiB) in 16-KiB chunks: refused, nothing bought.
    let filler = vec![b' '; 16 * 1024];
    let pieces: Vec<&[u8]> = std::iter::once(&body[..1])
        .chain(std::iter::repeat_n(&filler[..], 5))
        .chain(std::iter::once(&body[1..]))
        .collect();
    let (status, answer) =
        checkout_in_pieces(&address, &store.storefront, "pieces-2", &pieces).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // One order of 2: the replay bought nothing, the oversized body nothing either.
    let stock = stock_from_db(&app.db().await, &product).await;
    assert_eq!(
        stock,
        (10, 8, 2, 1),
        "total, available, units taken, orders"
    );
}
