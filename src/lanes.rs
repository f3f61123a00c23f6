//! Batching writers shared by the engine's completer and effects ledger, the
//! API's purchase writer and the sandbox provider's books: a queue drained
//! by a few lanes, each taking what has gathered (up to a batch) and
//! writing it as one statement. While one lane waits for its commit, another
//! gathers the next batch.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// A request waiting for a writer, and where its answer goes.
pub(crate) struct Call<Req, Ans> {
    pub request: Req,
    pub reply: oneshot::Sender<Ans>,
}

/// Hands `request` to the writer behind `sender` and waits for its answer;
/// `None` when the writer has stopped.
pub(crate) async fn ask<Req, Ans>(sender: &mpsc::Sender<Call<Req, Ans>>, request: Req) -> Option<Ans> {
    let (reply, answer) = oneshot::channel();
    sender.send(Call { request, reply }).await.ok()?;
    answer.await.ok()
}

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

/// Splits a batch into statements. One statement may not touch a row twice,
/// so a key asked for twice (a zombie attempt beside its successor) waits
/// for a later round. Each round is sorted by key, so concurrent batches
/// lock their rows in one order.
pub(crate) fn rounds<T>(mut items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    items.sort_by(|a, b| key(a).cmp(key(b)));
    let mut rounds = Vec::new();
    while !items.is_empty() {
        let mut round: Vec<T> = Vec::with_capacity(items.len());
        let mut later = Vec::new();
        for item in items {
            if round.last().is_some_and(|last| key(last) == key(&item)) {
                later.push(item);
            } else {
                round.push(item);
            }
        }
        rounds.push(round);
        items = later;
    }
    rounds
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_asked_twice_goes_in_a_later_round_and_each_round_is_sorted() {
        let keys = vec!["run2:capture", "run1:authorize", "run2:capture", "run3:enroll", "run2:capture"];
        let rounds = super::rounds(keys, |k| k);
        assert_eq!(
            rounds,
            vec![vec!["run1:authorize", "run2:capture", "run3:enroll"], vec!["run2:capture"], vec!["run2:capture"]]
        );
    }

    #[test]
    fn distinct_keys_are_one_round() {
        assert_eq!(super::rounds(vec!["b", "a"], |k| k), vec![vec!["a", "b"]]);
        assert!(super::rounds(Vec::<&str>::new(), |k| k).is_empty());
    }
}
