//! How a [`ProductMsg`] travels the bounded mailbox: the span it carries, whether its
//! caller is gone, and how it is answered when it cannot be served.

use super::{PatchFailure, ProductMsg};
use crate::actors::mailbox::Letter;
use crate::actors::Failure;

impl ProductMsg {
    /// The span a traced message carries (checkouts).
    pub fn span(&self) -> Option<&tracing::Span> {
        match self {
            ProductMsg::Checkout { cmd, .. } => Some(&cmd.span),
            _ => None,
        }
    }

    pub fn set_span(&mut self, span: tracing::Span) {
        if let ProductMsg::Checkout { cmd, .. } = self {
            cmd.span = span;
        }
    }

    /// Answers the message with `failure` (it was not delivered or cannot be served).
    pub fn fail(self, failure: Failure) {
        Letter::fail(self, failure)
    }
}

impl Letter for ProductMsg {
    fn caller_gone(&self) -> bool {
        match self {
            ProductMsg::Checkout { reply, .. } => reply.is_closed(),
            ProductMsg::Read { reply } | ProductMsg::Restock { reply, .. } => reply.is_closed(),
            ProductMsg::Confirm { reply, .. } | ProductMsg::Cancel { reply, .. } => {
                reply.is_closed()
            }
            ProductMsg::Patch { reply, .. } => reply.is_closed(),
            ProductMsg::Queue { reply, .. } | ProductMsg::QueueStatus { reply, .. } => {
                reply.is_closed()
            }
            ProductMsg::Warm => false,
        }
    }

    fn fail(self, failure: Failure) {
        match self {
            ProductMsg::Checkout { reply, .. } => drop(reply.send(Err(failure))),
            ProductMsg::Read { reply } | ProductMsg::Restock { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Confirm { reply, .. } | ProductMsg::Cancel { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Patch { reply, .. } => {
                drop(reply.send(Err(PatchFailure::Failure(failure))))
            }
            ProductMsg::Queue { reply, .. } | ProductMsg::QueueStatus { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Warm => {}
        }
    }
}
