//! Cooperative cancellation: the binary turns SIGINT / SIGTERM into a [`Cancel`] signal, and
//! long operations select on it so they can clean up (kill children, abort uploads) before
//! returning, instead of being dropped mid-flight.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Cancel(watch::Receiver<bool>);

/// The sending side, held by whoever decides to cancel.
pub struct CancelTrigger(watch::Sender<bool>);

impl Cancel {
    pub fn new() -> (CancelTrigger, Cancel) {
        let (tx, rx) = watch::channel(false);
        (CancelTrigger(tx), Cancel(rx))
    }

    /// Resolves once cancellation is requested.
    pub async fn cancelled(&mut self) {
        if self.0.wait_for(|c| *c).await.is_err() {
            // The trigger is gone, so cancellation can no longer be requested.
            std::future::pending::<()>().await;
        }
    }
}

impl CancelTrigger {
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}
