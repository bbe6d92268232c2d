//! Bounded mailboxes and deadlines: the one mechanism every message to an actor goes
//! through.
//!
//! actix 0.13 does not bound a mailbox for a freshly cloned `Addr` (a clone starts
//! unparked, so `try_send` on it never reports `Full`), so the bound is kept here, in
//! front of the actor: a [`Mailbox`] counts the messages queued for its actor and
//! refuses one beyond capacity at once ([`Refused::Full`], 503 `overloaded`). Every
//! message travels as a [`Mail`] with a [`Deadline`] and a permit that frees its place
//! when the message is handled or dropped. The receiving actor opens it with
//! [`Mail::open`], which drops a message whose caller has gone or whose time to start
//! has passed before it takes stock or reaches the database.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::Failure;
use crate::metrics::{mailbox_depth, DEADLINE_DROPS, MAILBOX_REJECTIONS};

/// The request deadline in milliseconds (`FLASHSALE_REQUEST_DEADLINE_MS`), and the
/// database work budget (see [`Deadline`]); process-wide, set once at start.
static REQUEST_DEADLINE_MS: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_REQUEST_DEADLINE_MS);
static WORK_BUDGET_MS: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_REQUEST_DEADLINE_MS / 2);

/// Sets the deadlines from the settings (at start).
pub fn configure_deadlines(settings: &crate::config::Settings) {
    REQUEST_DEADLINE_MS.store(settings.request_deadline_ms, Ordering::Relaxed);
    WORK_BUDGET_MS.store(settings.work_budget().as_millis() as u64, Ordering::Relaxed);
}

tokio::task_local! {
    /// When the answer to the request being served is due, if an earlier instance set
    /// it (a forwarded request, see `cluster::forward`).
    static FORWARDED_ANSWER_BY: Instant;
}

/// Runs `work` (the serving of one request) with the deadline it was forwarded with.
pub async fn within<F: std::future::Future>(answer_by: Option<Instant>, work: F) -> F::Output {
    match answer_by {
        Some(at) => FORWARDED_ANSWER_BY.scope(at, work).await,
        None => work.await,
    }
}

/// How long a request may take before it is answered.
pub fn request_deadline() -> Duration {
    Duration::from_millis(REQUEST_DEADLINE_MS.load(Ordering::Relaxed))
}

/// When the work of one request must be answered, and so by when it must have started.
///
/// Database work, once started, is bounded by the work budget (two statements under
/// `statement_timeout`, see [`crate::config::Settings::work_budget`]): work that has not
/// started by `answer_by - budget` is not started at all, so that whatever starts can
/// end, in the database too, before the caller's answer is due.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub answer_by: Instant,
    pub start_by: Instant,
}

impl Deadline {
    /// The deadline of a request arriving now.
    pub fn from_now() -> Self {
        let own = Instant::now() + request_deadline();
        // A request forwarded by another instance keeps the deadline it arrived with.
        let answer_by = FORWARDED_ANSWER_BY.try_with(|t| own.min(*t)).unwrap_or(own);
        let budget = Duration::from_millis(WORK_BUDGET_MS.load(Ordering::Relaxed));
        Deadline {
            answer_by,
            start_by: answer_by.checked_sub(budget).unwrap_or(answer_by),
        }
    }

    /// Whether it is too late to start work.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.start_by
    }

    /// Time left until the answer is due.
    pub fn left(&self) -> Duration {
        self.answer_by.saturating_duration_since(Instant::now())
    }
}

/// A message that can tell whether its caller still waits, and be answered with a
/// failure without being served.
pub trait Letter: Sized {
    /// The caller stopped waiting (its reply channel is closed).
    fn caller_gone(&self) -> bool;
    /// Answers the caller with `failure` (nothing was done).
    fn fail(self, failure: Failure);
}

/// Frees the message's place in its mailbox when dropped.
struct Permit {
    queued: Arc<AtomicUsize>,
    actor: &'static str,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        mailbox_depth(self.actor).dec();
    }
}

/// A message on its way to an actor, with its deadline and its place in the mailbox.
pub struct Mail<M> {
    msg: M,
    pub deadline: Deadline,
    _permit: Permit,
}

impl<M: Message<Result = ()>> Message for Mail<M> {
    type Result = ();
}

impl<M: Letter> Mail<M> {
    /// The message, unless its caller has gone or its time to start has passed: then it
    /// is answered 503 `unavailable` (nothing was done) and counted as dropped.
    pub fn open(self) -> Option<(M, Deadline)> {
        let Mail {
            msg,
            deadline,
            _permit,
        } = self;
        let reason = if msg.caller_gone() {
            "caller_gone"
        } else if deadline.passed() {
            "deadline"
        } else {
            return Some((msg, deadline));
        };
        DEADLINE_DROPS
            .with_label_values(&[_permit.actor, reason])
            .inc();
        msg.fail(Failure::Unavailable);
        None
    }
}

/// Why a message was not queued; it comes back to be answered.
pub enum Refused<M> {
    /// The mailbox is at capacity: 503 `overloaded`.
    Full(M),
    /// The actor has stopped.
    Closed(M),
}

/// One long-lived address of an actor with the bound of its mailbox.
pub struct Mailbox<A: Actor> {
    addr: Addr<A>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// The actor's kind, as the metrics name it.
    actor: &'static str,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Mailbox {
            addr: self.addr.clone(),
            queued: self.queued.clone(),
            capacity: self.capacity,
            actor: self.actor,
        }
    }
}

impl<A: Actor> Mailbox<A> {
    pub fn new(addr: Addr<A>, capacity: usize, actor: &'static str) -> Self {
        Mailbox {
            addr,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
            actor,
        }
    }

    pub fn connected(&self) -> bool {
        self.addr.connected()
    }

    /// Messages queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Queues `msg` unless the mailbox is full (counted as a rejection) or the actor
    /// has stopped.
    pub fn send<M>(&self, msg: M, deadline: Deadline) -> Result<(), Refused<M>>
    where
        M: Message<Result = ()> + Send + 'static,
        A: Handler<Mail<M>>,
        A::Context: actix::dev::ToEnvelope<A, Mail<M>>,
    {
        if !self.addr.connected() {
            return Err(Refused::Closed(msg));
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            MAILBOX_REJECTIONS.with_label_values(&[self.actor]).inc();
            return Err(Refused::Full(msg));
        }
        mailbox_depth(self.actor).inc();
        let permit = Permit {
            queued: self.queued.clone(),
            actor: self.actor,
        };
        // `do_send`: the bound is the counter above, not actix's channel (which a clone
        // of the address would bypass anyway).
        self.addr.do_send(Mail {
            msg,
            deadline,
            _permit: permit,
        });
        Ok(())
    }
}
