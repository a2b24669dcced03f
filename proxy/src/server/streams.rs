//! A set of futures polled by the task that owns it, each only when it was woken: the
//! streams of one HTTP/2 connection run inside the connection's task instead of a task
//! each (a task per stream costs an aligned allocation, a copy of the future and
//! cross-task wake-ups on every request).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Indices woken since the last poll, and the owner's waker.
#[derive(Default)]
struct Ready {
    queue: Mutex<Vec<usize>>,
    owner: Mutex<Option<Waker>>,
}

/// Wakes one member of the set.
struct MemberWaker {
    idx: usize,
    ready: Arc<Ready>,
}

impl Wake for MemberWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.idx);
        if let Some(w) = self
            .ready
            .owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

struct Member {
    fut: BoxFut,
    waker: Waker,
}

/// The futures of one owner.
#[derive(Default)]
pub struct StreamSet {
    members: Vec<Option<Member>>,
    free: Vec<usize>,
    len: usize,
    ready: Arc<Ready>,
}

impl StreamSet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a future; it is polled on the next [`poll`](Self::poll).
    pub fn push(&mut self, fut: BoxFut) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.members.push(None);
            self.members.len() - 1
        });
        let waker = Waker::from(Arc::new(MemberWaker {
            idx,
            ready: self.ready.clone(),
        }));
        self.members[idx] = Some(Member { fut, waker });
        self.len += 1;
        self.ready
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(idx);
    }

    /// Polls the members that were woken; `Ready` when the set is empty.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut owner = self
                .ready
                .owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !owner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *owner = Some(cx.waker().clone());
            }
        }
        loop {
            let batch = std::mem::take(
                &mut *self
                    .ready
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            if batch.is_empty() {
                break;
            }
            for idx in batch {
                let Some(slot) = self.members.get_mut(idx) else {
                    continue;
                };
                // A stale wake-up for a finished member (or its successor) is harmless.
                let Some(m) = slot.as_mut() else { continue };
                let mut mcx = Context::from_waker(&m.waker);
                if m.fut.as_mut().poll(&mut mcx).is_ready() {
                    *slot = None;
                    self.free.push(idx);
                    self.len -= 1;
                }
            }
        }
        if self.len == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn members_run_to_completion_and_slots_are_reused() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut set = StreamSet::default();
        for i in 0..10u64 {
            let d = done.clone();
            set.push(Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i)).await;
                d.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert_eq!(set.len(), 10);
        std::future::poll_fn(|cx| set.poll(cx)).await;
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert!(set.is_empty());
        set.push(Box::pin(async {}));
        assert_eq!(set.members.len(), 10, "a free slot was reused");
    }
}
