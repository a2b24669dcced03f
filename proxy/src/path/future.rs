//! The two futures the layers share, so that a layer that only looks at the outcome, or
//! that waits only sometimes, costs no allocation on the common path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{BoxFuture, Outcome};

/// Work a layer does on the outcome of the layers below it.
pub trait Hook {
    fn after(self, out: &mut Outcome);
}

pin_project! {
    /// The inner future, then the hook on its outcome.
    pub struct After<F, H> {
        #[pin]
        fut: F,
        hook: Option<H>,
    }
}

impl<F, H> After<F, H> {
    pub fn new(fut: F, hook: H) -> Self {
        Self {
            fut,
            hook: Some(hook),
        }
    }
}

impl<F: Future<Output = Outcome>, H: Hook> Future for After<F, H> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.project();
        let mut out = ready!(this.fut.poll(cx));
        if let Some(h) = this.hook.take() {
            h.after(&mut out);
        }
        Poll::Ready(out)
    }
}

pin_project! {
    /// The inner future as it is (the common path), a boxed one (the layer waits first),
    /// or an outcome known at once.
    #[project = MaybeProj]
    pub enum Maybe<'a, F> {
        Inner { #[pin] fut: F },
        Boxed { fut: BoxFuture<'a> },
        Ready { out: Option<Outcome> },
    }
}

impl<'a, F> Maybe<'a, F> {
    pub fn inner(fut: F) -> Self {
        Maybe::Inner { fut }
    }

    pub fn boxed(fut: impl Future<Output = Outcome> + Send + 'a) -> Self {
        Maybe::Boxed { fut: Box::pin(fut) }
    }

    pub fn ready(out: Outcome) -> Self {
        Maybe::Ready { out: Some(out) }
    }
}

impl<F: Future<Output = Outcome>> Future for Maybe<'_, F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            MaybeProj::Inner { fut } => fut.poll(cx),
            MaybeProj::Boxed { fut } => fut.as_mut().poll(cx),
            MaybeProj::Ready { out } => match out.take() {
                Some(o) => Poll::Ready(o),
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// One of two futures with the same output, chosen when it is made: no allocation,
    /// and no `async` block around it to keep the arguments twice.
    #[project = EitherProj]
    pub enum Either<A, B> {
        Left { #[pin] fut: A },
        Right { #[pin] fut: B },
    }
}

impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            EitherProj::Left { fut } => fut.poll(cx),
            EitherProj::Right { fut } => fut.poll(cx),
        }
    }
}

/// `Box::pin(make())`, with the future written straight into its allocation. A request's
/// future is several KiB, mostly room for states it has not reached; `Box::pin` builds it
/// on the stack and then copies all of it, while here the allocation comes first and the
/// constructor writes only the arguments into it.
#[inline(always)]
pub fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
