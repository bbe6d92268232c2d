//! Deciding one checkout in the product's mailbox: replay of a known key, waiting-room
//! admission, sale window, per-customer limit and stock; a taken order goes to the
//! writer.

use actix::prelude::*;
use chrono::{SubsecRound, Utc};

use super::keys::KeyUse;
use super::{CheckoutCommand, CheckoutReply, Loaded, ProductActor};
use crate::actors::mailbox::{Deadline, Refused};
use crate::actors::writer::Write;
use crate::actors::{Checkout, Failure, Shared};
use crate::db::orders::HeldOrder;
use crate::domain::ids::{id_from_bits, new_id_bits};
use crate::domain::ledger::Refusal;
use crate::domain::order::{NewOrder, Order};
use crate::domain::waiting_room;
use crate::telemetry::SPAN_PRODUCT_CHECKOUT;

/// Decides one checkout and, if it takes stock, hands the order to the writer.
pub(super) fn checkout(
    loaded: &mut Loaded,
    cmd: CheckoutCommand,
    reply: CheckoutReply,
    deadline: Deadline,
    shared: &Shared,
    ctx: &mut Context<ProductActor>,
) {
    let span = tracing::debug_span!(parent: &cmd.span, SPAN_PRODUCT_CHECKOUT, product.id = %loaded.product.id);
    let _entered = span.enter();
    match loaded.keys.find(&cmd.idempotency_key, cmd.key_checked) {
        KeyUse::Recent(order_id, request_hash) => {
            let known = Checkout::KnownKey {
                order_id,
                request_hash,
            };
            let _ = reply.send(Ok(known));
            return;
        }
        // Before the limit or the stock can refuse it: the database may have its order.
        KeyUse::Maybe => {
            let _ = reply.send(Ok(Checkout::MaybeKnown(Box::new(cmd))));
            return;
        }
        KeyUse::New => {}
    }
    // Microseconds: what PostgreSQL keeps, so a replay from the database is byte-equal.
    let now = Utc::now().trunc_subsecs(6);
    let product = &loaded.product;
    let body = cmd.body;
    let max = product.max_per_customer.map(i64::from);
    if product.waiting_room.is_some() {
        let admitted = cmd.queue_token.as_deref().is_some_and(|token| {
            waiting_room::verify(
                &shared.queue_secret,
                token,
                &product.id,
                &body.customer_id,
                now,
            )
        });
        if !admitted {
            let _ = reply.send(Err(Failure::Refused(Refusal::WaitingRoomTokenRequired)));
            return;
        }
    }
    if let Err(refusal) = loaded.ledger.take(
        &body.customer_id,
        body.quantity,
        max,
        &product.window(),
        now,
    ) {
        let _ = reply.send(Err(Failure::Refused(refusal)));
        return;
    }
    let held = product.hold_seconds > 0;
    let quantity = body.quantity as i32;
    let order_bits = new_id_bits();
    let order = Order {
        id: id_from_bits("ord", order_bits),
        store_id: product.store_id.clone(),
        product_id: product.id.clone(),
        customer_id: body.customer_id.clone(),
        quantity,
        unit_price_cents: product.price_cents,
        currency: product.currency.clone(),
        total_cents: product.price_cents * i64::from(quantity),
        status: if held { "reserved" } else { "confirmed" }.to_owned(),
        expires_at: held.then(|| now + chrono::Duration::seconds(product.hold_seconds.into())),
        created_at: now,
    };
    let hold = order.expires_at.map(|expires_at| HeldOrder {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        quantity: i64::from(quantity),
        expires_at,
    });
    let new_order = NewOrder {
        order,
        idempotency_key: cmd.idempotency_key,
        request_hash: cmd.request_hash,
        api_key_id: cmd.api_key_id,
        client_addr: cmd.client_addr,
        consent: body.consent,
    };
    let write = Write {
        order: new_order,
        product: ctx.address(),
        reply,
        span: span.clone(),
        deadline,
        fence: loaded.fence,
        sent: std::time::Instant::now(),
    };
    // Recorded from the order before the order moves to the writer (the actor handles
    // no other message in between), and forgotten again if the writer refuses it.
    loaded.keys.record(
        &write.order.idempotency_key,
        order_bits,
        write.order.request_hash,
    );
    match shared.writer.send(write, deadline) {
        Ok(()) => {
            loaded.touch(now);
            if let Some(hold) = hold {
                loaded.holds.arm(hold, ctx);
            }
        }
        Err(Refused::Full(w) | Refused::Closed(w)) => {
            loaded
                .keys
                .forget(&w.order.idempotency_key, &w.order.order.id);
            loaded.ledger.give_back(&body.customer_id, body.quantity);
            let _ = w.reply.send(Err(Failure::Overloaded));
        }
    }
}
