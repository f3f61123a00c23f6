//! Batching writers shared by the completer and the effects ledger: a queue
//! drained by a few lanes, each taking what has gathered (up to a batch) and
//! writing it as one statement. While one lane waits for its commit, another
//! gathers the next batch.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

/// Starts `lanes` writers over one queue; `write` gets each batch. A lane
/// ends when every sender is gone.
pub(crate) fn spawn<T, F, Fut>(max_batch: usize, lanes: usize, write: F) -> (mpsc::Sender<T>, Vec<JoinHandle<()>>)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (sender, receiver) = mpsc::channel::<T>(max_batch * lanes.max(1) * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let handles = (0..lanes.max(1))
        .map(|_| {
            let (write, receiver) = (write.clone(), receiver.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::with_capacity(max_batch);
                    {
                        let mut rx = receiver.lock().await;
                        if rx.recv_many(&mut batch, max_batch).await == 0 {
                            return;
                        }
                    }
                    write(batch).await;
                }
            })
        })
        .collect();
    (sender, handles)
}
