//! Clients following a log live (`/v1/log/audit`, `/v1/log/error`).
//!
//! Whether anyone follows is asked on every request: with no sink and no
//! follower, the audit line is not even built. tokio's broadcast channel
//! answers that (`receiver_count`) under the channel's mutex, a lock every
//! core would take on every request; here the answer is a counter written
//! only when a follower comes or goes, which every core can keep cached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

pub use broadcast::error::RecvError;

/// How many lines a slow follower may fall behind before it skips ahead.
const CAPACITY: usize = 1024;

/// The followers of one log.
pub struct Followers {
    lines: broadcast::Sender<Arc<str>>,
    count: Arc<AtomicUsize>,
}

/// One client following a log; leaves when dropped.
pub struct Follower {
    lines: broadcast::Receiver<Arc<str>>,
    count: Arc<AtomicUsize>,
}

impl Followers {
    pub fn new() -> Followers {
        Followers { lines: broadcast::channel(CAPACITY).0, count: Arc::new(AtomicUsize::new(0)) }
    }

    /// Whether anyone is following.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Sends the line `make` builds to everyone following; with no one
    /// following, the line is not even built.
    pub fn send_with(&self, make: impl FnOnce() -> Arc<str>) {
        if self.any() {
            let _ = self.lines.send(make());
        }
    }

    /// A new follower, seeing every line sent from now on.
    pub fn follow(&self) -> Follower {
        let lines = self.lines.subscribe();
        self.count.fetch_add(1, Ordering::Relaxed);
        Follower { lines, count: self.count.clone() }
    }
}

impl Default for Followers {
    fn default() -> Self {
        Followers::new()
    }
}

impl Follower {
    /// The next line; [`RecvError::Lagged`] if this follower fell more than
    /// the channel's capacity behind (it then goes on with the oldest line
    /// kept), [`RecvError::Closed`] once the log is gone.
    pub async fn recv(&mut self) -> Result<Arc<str>, RecvError> {
        self.lines.recv().await
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_are_counted_while_they_follow() {
        let followers = Followers::new();
        assert!(!followers.any());
        followers.send_with(|| unreachable!("no one follows yet"));
        let mut first = followers.follow();
        let second = followers.follow();
        assert!(followers.any());
        followers.send_with(|| Arc::from("one"));
        assert_eq!(&*first.recv().await.unwrap(), "one");
        drop(second);
        assert!(followers.any(), "one still follows");
        drop(first);
        assert!(!followers.any());
    }
}
