//! The soak while the traffic runs: samples and reloads on schedule, then
//! the shutdown, the audit count and the report.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Method;

use super::audit::{AuditFiles, AuditTally};
use super::report::{growth, latency, print_sample, summary, verdict, Report, Sample};
use super::server::{metric, summarize_log, Keyward};
use super::traffic::{call, Counts, Shared};
use super::{version, SoakArgs};
use crate::{compare, procfs};

/// The soak once the traffic runs: the server, the shared counters, the
/// audit files and the report being filled in.
pub(super) struct Run<'a> {
    pub(super) args: &'a SoakArgs,
    pub(super) k: Keyward,
    pub(super) s: Arc<Shared>,
    pub(super) audit: AuditFiles,
    pub(super) report: Report,
    pub(super) reload_ms: Vec<f64>,
    /// Time and response count of the previous sample, for its rate.
    pub(super) last: (Instant, u64),
}

impl<'a> Run<'a> {
    pub(super) fn new(args: &'a SoakArgs, k: Keyward, s: Arc<Shared>, keyward_bin: &Path) -> Run<'a> {
        let audit =
            AuditFiles { dir: k.audit_dir.clone(), pending: Vec::new(), rotations: 0, tally: AuditTally::default() };
        let report = Report {
            date: compare::now_rfc3339(),
            keyward_version: version(keyward_bin),
            duration_s: args.duration.as_secs_f64(),
            connections: args.connections,
            keys: args.keys,
            reload_every_s: args.reload_every.as_secs_f64(),
            sample_every_s: args.sample_every.as_secs_f64(),
            without: args.without.clone(),
            ..Report::default()
        };
        let last = (s.started, 0);
        Run { args, k, s, audit, report, reload_ms: Vec::new(), last }
    }

    /// Samples and reloads on schedule until the end or an interrupt
    /// (SIGINT/SIGTERM), which ends the traffic early.
    pub(super) async fn control(&mut self) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let (args, started) = (self.args, self.s.started);
        let end = started + args.duration;
        let mut next_sample = started + args.sample_every;
        let never = end + Duration::from_secs(3600);
        let mut next_reload = if args.reload_every.is_zero() { never } else { started + args.reload_every };
        loop {
            let next = next_sample.min(next_reload).min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = tokio::signal::ctrl_c() => self.report.interrupted = true,
                _ = term.recv() => self.report.interrupted = true,
            }
            if self.report.interrupted {
                eprintln!("soak: interrupted; stopping the traffic and shutting the server down");
                return Ok(());
            }
            let now = Instant::now();
            if now >= next_sample {
                let sample = self.take_sample()?;
                print_sample(&sample);
                self.report.samples.push(sample);
                next_sample += args.sample_every;
            }
            if now >= end {
                return Ok(());
            }
            if now >= next_reload {
                self.reload().await;
                next_reload += args.reload_every;
            }
        }
    }

    pub(super) async fn reload(&mut self) {
        self.report.reloads += 1;
        match self.k.reload().await {
            Ok(took) => self.reload_ms.push(took.as_secs_f64() * 1e3),
            Err(e) => {
                self.report.reload_failures += 1;
                eprintln!("soak: {e:#}\n{}", self.k.stderr_tail());
            }
        }
    }

    pub(super) fn take_sample(&mut self) -> Result<Sample> {
        if let Some(status) = self.k.exited()? {
            bail!("keyward exited during the soak ({status}):\n{}", self.k.stderr_tail());
        }
        let pid = self.k.server.pid();
        let (rss_kib, fds) = (procfs::rss_kib(pid).unwrap_or(0), procfs::fd_count(pid).unwrap_or(0));
        let threads = procfs::threads(pid).unwrap_or(0);
        self.audit.rotate()?;
        let now = Instant::now();
        let p = &self.s.progress;
        let responses = p.responses.load(Ordering::Relaxed);
        let rps = (responses - self.last.1) as f64 / (now - self.last.0).as_secs_f64().max(1e-9);
        self.last = (now, responses);
        Ok(Sample {
            t_s: (now - self.s.started).as_secs_f64(),
            rss_kib,
            fds,
            threads,
            responses,
            rps,
            unexpected: p.unexpected.load(Ordering::Relaxed),
            provoked: p.provoked.load(Ordering::Relaxed),
            audit_lines: self.audit.tally.lines,
            reloads: self.report.reloads,
        })
    }

    /// After the traffic: metrics, graceful shutdown, the audit count, the verdict.
    pub(super) async fn finish(mut self, mut counts: Counts, hist: &Histogram<u64>) -> Result<bool> {
        let pid = self.k.server.pid();
        // The server notices the traffic's connections closing a moment later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.report.rss_after_traffic_kib = procfs::rss_kib(pid);
        self.report.fds_after_traffic = procfs::fd_count(pid);
        let target = &self.s.target;
        let mut c = target.connect().await?;
        let metrics = call(&mut c, target, &mut counts, Method::GET, "/v1/metrics", Bytes::new()).await?;
        drop(c);
        let metrics = String::from_utf8_lossy(&metrics);
        self.report.server_audit_events = metric(&metrics, "kes_log_audit_events");
        self.report.server_audit_dropped = metric(&metrics, "keyward_audit_dropped_events");
        self.report.shutdown = self.k.shut_down().await?;
        self.audit.finish()?;
        self.report.audit = self.audit.tally.clone();
        self.report.log = summarize_log(&self.k.server.stderr());
        self.fill_in(counts, hist);
        let r = &mut self.report;
        r.reasons = verdict(r);
        r.pass = r.reasons.is_empty();
        println!("{}", summary(r));
        println!("{}", serde_json::to_string(r)?);
        Ok(r.pass)
    }

    /// The figures of the report that come from the counters and samples.
    pub(super) fn fill_in(&mut self, counts: Counts, hist: &Histogram<u64>) {
        let (p, r, args) = (&self.s.progress, &mut self.report, self.args);
        r.traffic_responses = p.responses.load(Ordering::Relaxed);
        r.rps = r.traffic_responses as f64 / r.elapsed_s.max(1e-9);
        r.unexpected = p.unexpected.load(Ordering::Relaxed);
        r.transport_errors = p.transport.load(Ordering::Relaxed);
        r.provoked = p.provoked.load(Ordering::Relaxed);
        r.failures = p.failures.lock().unwrap().clone();
        r.responses = counts.total();
        r.client_by_status = counts.by_status;
        r.latency_us = latency(hist);
        r.reload_ms_median = compare::median(self.reload_ms.clone());
        r.reload_ms_max = self.reload_ms.iter().copied().fold(f64::NAN, f64::max);
        let rss: Vec<(f64, f64)> = r.samples.iter().map(|x| (x.t_s, x.rss_kib as f64)).collect();
        let fds: Vec<(f64, f64)> = r.samples.iter().map(|x| (x.t_s, x.fds as f64)).collect();
        let warmup = args.warmup();
        r.warmup_s = warmup.as_secs_f64();
        let rss_limit = |base: f64| (args.rss_tolerance_mib * 1024.0).max(base * args.rss_tolerance_pct / 100.0);
        r.rss_kib = growth(&rss, warmup, rss_limit);
        r.fds = growth(&fds, warmup, |_| args.fd_tolerance as f64);
    }
}
