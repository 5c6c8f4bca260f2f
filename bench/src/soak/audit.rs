//! Counting the audit sink's lines, per status, while the sink writes them.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Audit lines counted, in total and per `response.code`.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct AuditTally {
    pub(super) lines: u64,
    pub(super) by_status: BTreeMap<u16, u64>,
    /// Lines without a readable `"code":` (never expected).
    pub(super) unparsed: u64,
}

/// The `response.code` of a KES audit line, found without a JSON parse: a
/// 30-minute run writes tens of millions of lines.
pub(super) fn status_of(line: &[u8]) -> Option<u16> {
    const KEY: &[u8] = b"\"code\":";
    let at = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()?.parse().ok()
}

impl AuditTally {
    pub(super) fn count_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        for line in std::io::BufReader::with_capacity(1 << 20, file).split(b'\n') {
            let line = line.with_context(|| format!("read {}", path.display()))?;
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            match status_of(&line) {
                Some(s) => *self.by_status.entry(s).or_default() += 1,
                None => self.unparsed += 1,
            }
        }
        Ok(())
    }
}

/// The audit-file sink's output directory. The sink opens its file by path
/// for every batch (creating it if missing), so renaming the file is a safe rotation:
/// a batch that opened it before the rename lands in the renamed file, later
/// ones in a new file. A renamed file is counted and removed one rotation
/// later, when no batch can still be writing to it.
pub(super) struct AuditFiles {
    pub(super) dir: PathBuf,
    pub(super) pending: Vec<PathBuf>,
    pub(super) rotations: u64,
    pub(super) tally: AuditTally,
}

/// The sink's file for config generation `generation` (a new one per reload).
pub(super) fn audit_file(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("audit-{generation}.jsonl"))
}

pub(super) fn is_live_audit_file(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
}

impl AuditFiles {
    pub(super) fn live_files(&self) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?;
        Ok(entries.flatten().map(|e| e.path()).filter(|p| is_live_audit_file(p)).collect())
    }

    pub(super) fn count_pending(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            self.tally.count_file(&p)?;
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        Ok(())
    }

    /// Counts what was rotated last time and rotates the live files.
    pub(super) fn rotate(&mut self) -> Result<()> {
        self.count_pending()?;
        for live in self.live_files()? {
            let rotated = self.dir.join(format!("rotated-{}.jsonl", self.rotations));
            self.rotations += 1;
            std::fs::rename(&live, &rotated).with_context(|| format!("rotate {}", live.display()))?;
            self.pending.push(rotated);
        }
        Ok(())
    }

    /// Counts everything left; only once the server has exited.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.count_pending()?;
        for live in self.live_files()? {
            self.tally.count_file(&live)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_status_is_read_from_the_line() {
        let line = br#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"127.0.0.1","path":"/v1/key/describe/x","identity":"ab"},"response":{"code":404,"time":3000}}"#;
        assert_eq!(status_of(line), Some(404));
        assert_eq!(status_of(b"{}"), None);
    }

    #[test]
    fn rotation_counts_every_line_once() {
        let dir = std::env::temp_dir().join(format!("keyward-soak-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let line = r#"{"response":{"code":200,"time":1}}"#;
        let mut a = AuditFiles { dir: dir.clone(), pending: Vec::new(), rotations: 0, tally: AuditTally::default() };
        std::fs::write(audit_file(&dir, 0), format!("{line}\n{line}\n")).unwrap();
        a.rotate().unwrap();
        assert_eq!(a.tally.lines, 0, "counted one rotation later");
        std::fs::write(audit_file(&dir, 1), format!("{line}\n")).unwrap();
        a.rotate().unwrap();
        assert_eq!(a.tally.lines, 2);
        std::fs::write(audit_file(&dir, 1), format!("{}\n", line.replace("200", "400"))).unwrap();
        a.finish().unwrap();
        assert_eq!(a.tally.lines, 4);
        assert_eq!(a.tally.by_status, BTreeMap::from([(200, 3), (400, 1)]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
