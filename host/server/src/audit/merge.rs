//! Merging the serving threads' pending events into one batch of lines in
//! answer order.

use super::line::push_line;
use super::queue::Pending;

/// Lines a writer formats between offers of its CPU to other threads.
/// Formatting a batch takes a few hundred microseconds under load, on a CPU
/// a request worker may be waiting for; yielding every so often lets the
/// worker in (paired in turns, encrypt at 16 connections: p99 7-15 % lower
/// in 4 of 4 runs; one yield costs ~1 µs).
const LINES_PER_YIELD: usize = 128;

/// Appends the lines of the events in `buffers` to `out`, each followed by
/// a newline, by answer time. Each buffer is already in that order (one
/// thread's).
pub(super) fn write_lines(out: &mut String, buffers: &[Pending]) {
    let mut next = vec![0usize; buffers.len()];
    for written in 1.. {
        let earliest = (0..buffers.len())
            .filter(|&b| next[b] < buffers[b].events.len())
            .min_by_key(|&b| buffers[b].events[next[b]].answered);
        let Some(b) = earliest else { return };
        if written % LINES_PER_YIELD == 0 {
            std::thread::yield_now();
        }
        push_line(out, &buffers[b].event(next[b]));
        out.push('\n');
        next[b] += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::audit::test_support::{at, record, Collect, ALONE};
    use crate::audit::{line, Answered, AuditLog};
    use crate::metrics::Metrics;

    /// The writer's lines are exactly the lines of the events the request
    /// path recorded, whatever fields they have, in answer order across
    /// threads' buffers.
    #[test]
    fn pending_events_become_their_lines() {
        let start = Instant::now();
        let events = [
            (Some("127.0.0.1"), Some("ab12"), "/v1/key/encrypt/k", 200, Duration::from_nanos(1_234_567)),
            (None, None, "", 404, Duration::ZERO),
            (Some("::1"), None, "/ünï\"cödé/\u{1}", 500, Duration::from_secs(3)),
            (None, Some("x\"y"), "/v1/status", 403, Duration::from_nanos(999)),
        ];
        let (mut even, mut odd) = (Pending::default(), Pending::default());
        let mut expected = String::new();
        for (i, (ip, identity, path, status, duration)) in events.into_iter().enumerate() {
            let answered = Answered {
                received: at(1_700_000_000_123_456_789 + i as u64),
                ip,
                path,
                identity,
                status,
                duration,
                answered: start + Duration::from_millis(i as u64),
            };
            assert!(if i % 2 == 0 { even.push(&answered) } else { odd.push(&answered) });
            expected.push_str(&line(&answered));
            expected.push('\n');
        }
        let mut out = String::new();
        write_lines(&mut out, &[odd, even]);
        assert_eq!(out, expected);
    }

    /// Requests answered on several threads: nothing is lost, and each
    /// thread's lines keep their order (the merge across threads is checked
    /// by `sequential_requests_on_different_threads_stay_in_order`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_recorded_on_many_threads_all_arrive_each_thread_in_order() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("c".into(), collect.clone())]);
        let (threads, each) = (4, 2000);
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..each {
                        record(log, &format!("/{t}/{i}"));
                        if i % 250 == 0 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                });
            }
        });
        log.flush_and_close().await;
        let paths = collect.paths();
        assert_eq!(paths.len(), threads * each, "every event");
        for t in 0..threads {
            let prefix = format!("/{t}/");
            let mine: Vec<&String> = paths.iter().filter(|p| p.starts_with(&prefix)).collect();
            let expected: Vec<String> = (0..each).map(|i| format!("/{t}/{i}")).collect();
            assert!(mine.into_iter().eq(expected.iter()), "thread {t}'s lines in the order recorded");
        }
    }

    /// A client's requests one after another, each answered on a
    /// different thread: the sink gets them in the order they were made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_requests_on_different_threads_stay_in_order() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("c".into(), collect.clone())]);
        let n = 60;
        std::thread::scope(|s| {
            for i in 0..n {
                let log = &log;
                // A new thread for each: consecutive ones get different shards.
                s.spawn(move || record(log, &format!("/{i}"))).join().unwrap();
            }
        });
        log.flush_and_close().await;
        let expected: Vec<String> = (0..n).map(|i| format!("/{i}")).collect();
        assert_eq!(collect.paths(), expected);
    }
}
