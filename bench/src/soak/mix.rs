//! What the soak sends: the operations, their mix, the requests each
//! connection plans, and what every answer must be.

use std::collections::VecDeque;

use anyhow::{bail, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Keys a connection creates before it deletes one: the churn stays at a few
/// hundred keys however long the run.
pub(super) const CHURN_KEYS_PER_CONNECTION: usize = 4;
/// Prefix of the long-lived keys; churn keys and missing keys never match it,
/// so a listing of it has exactly `--keys` names.
pub(super) const STABLE_PREFIX: &str = "soak-k-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Encrypt,
    Decrypt,
    Generate,
    Hmac,
    Describe,
    List,
    Create,
    Delete,
    /// Describe of a key that never existed: must be 404.
    DescribeMissing,
    /// Decrypt of random bytes: must be 400 (not authentic).
    DecryptGarbage,
}

impl Op {
    /// Whether the soak sends it to get an error answer on purpose.
    pub(super) fn provoked(self) -> bool {
        matches!(self, Op::DescribeMissing | Op::DecryptGarbage)
    }
}

/// The traffic mix, in requests per 10,000: mostly cached-key
/// cryptography, as in real use; creates and deletes (plugin calls with an
/// fsync each) churn a few keys per connection; a listing reads the whole key
/// directory through the plugin, so it is rare; 3 % are provoked failures,
/// one of which (a missing key) goes through the keystore plugin too.
pub(super) const MIX: [(Op, u32); 10] = [
    (Op::Encrypt, 3000),
    (Op::Decrypt, 2200),
    (Op::Generate, 1500),
    (Op::Hmac, 1500),
    (Op::Describe, 1090),
    (Op::List, 10),
    (Op::Create, 200),
    (Op::Delete, 200),
    (Op::DescribeMissing, 150),
    (Op::DecryptGarbage, 150),
];

/// [`MIX`] less the operations left out.
pub(super) struct Mix {
    pub(super) ops: Vec<(Op, u32)>,
    pub(super) total: u32,
}

impl Mix {
    pub(super) fn new(without: &[Op]) -> Result<Mix> {
        if without.contains(&Op::Create) != without.contains(&Op::Delete) {
            bail!("--without: create and delete go together (each connection deletes only keys it created)");
        }
        let ops: Vec<(Op, u32)> = MIX.into_iter().filter(|(op, _)| !without.contains(op)).collect();
        let total = ops.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("--without leaves nothing to send");
        }
        Ok(Mix { ops, total })
    }

    /// The operation for a uniform draw in `0..total`.
    pub(super) fn pick(&self, mut draw: u32) -> Op {
        for &(op, weight) in &self.ops {
            if draw < weight {
                return op;
            }
            draw -= weight;
        }
        self.ops[0].0
    }
}

/// What the traffic needs to know in advance to check every answer.
pub(super) struct Fixture {
    pub(super) names: Vec<String>,
    pub(super) encrypt_body: Bytes,
    /// What every decrypt of a set-up ciphertext must return.
    pub(super) plaintext_b64: String,
    pub(super) hmac_body: Bytes,
    /// Per long-lived key: a decrypt body (a set-up ciphertext) and the HMAC of the message.
    pub(super) decrypt_bodies: Vec<Bytes>,
    pub(super) hmacs: Vec<String>,
    pub(super) garbage_body: Bytes,
}

/// One request of the traffic and what it is about.
pub(super) struct Call {
    pub(super) op: Op,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) body: Bytes,
    /// Index of the long-lived key it uses.
    pub(super) key: usize,
    /// The churn key a create makes.
    pub(super) created: Option<String>,
}

impl Call {
    pub(super) fn request_line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub(super) fn json_field(body: &[u8], field: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    v.get(field).and_then(|f| f.as_str()).map(str::to_string).ok_or_else(|| format!("no '{field}' string"))
}

impl Fixture {
    /// Checks one answer; `Err` says what was wrong with it.
    pub(super) fn verify(&self, call: &Call, status: StatusCode, body: &[u8]) -> Result<(), String> {
        let expected = match call.op {
            Op::DescribeMissing => StatusCode::NOT_FOUND,
            Op::DecryptGarbage => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        if status != expected {
            return Err(format!("HTTP {status}, expected {expected}: {}", String::from_utf8_lossy(body)));
        }
        let same = |field: &str, want: &str| match json_field(body, field) {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!("'{field}' is {got:?}, expected {want:?}")),
            Err(e) => Err(e),
        };
        match call.op {
            Op::Encrypt => json_field(body, "ciphertext").map(drop),
            Op::Decrypt => same("plaintext", &self.plaintext_b64),
            Op::Hmac => same("hmac", &self.hmacs[call.key]),
            Op::Describe => same("name", &self.names[call.key]),
            Op::Generate => json_field(body, "plaintext").and_then(|_| json_field(body, "ciphertext")).map(drop),
            Op::List => self.verify_listing(body),
            Op::Create | Op::Delete | Op::DescribeMissing | Op::DecryptGarbage => Ok(()),
        }
    }

    /// An ndjson listing of [`STABLE_PREFIX`]: exactly the long-lived keys.
    pub(super) fn verify_listing(&self, body: &[u8]) -> Result<(), String> {
        let mut n = 0;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            let name = json_field(line, "name")?;
            if !name.starts_with(STABLE_PREFIX) {
                return Err(format!("listing holds {name:?}"));
            }
            n += 1;
        }
        if n != self.names.len() {
            return Err(format!("listing has {n} names, expected {}", self.names.len()));
        }
        Ok(())
    }
}

/// One connection's request generator: picks operations and keeps track of
/// the churn keys it created (and so may delete).
pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) seq: u64,
    pub(super) own: VecDeque<String>,
    pub(super) rng: StdRng,
}

impl Worker {
    pub(super) fn new(id: usize) -> Worker {
        Worker { id, seq: 0, own: VecDeque::new(), rng: StdRng::from_entropy() }
    }

    /// The operation to send next: a draw from the mix, with creates and
    /// deletes swapped so each connection holds 0..=[`CHURN_KEYS_PER_CONNECTION`].
    pub(super) fn next_op(&mut self, mix: &Mix) -> Op {
        match mix.pick(self.rng.gen_range(0..mix.total)) {
            Op::Create if self.own.len() >= CHURN_KEYS_PER_CONNECTION => Op::Delete,
            Op::Delete if self.own.is_empty() => Op::Create,
            op => op,
        }
    }

    pub(super) fn plan(&mut self, f: &Fixture, mix: &Mix) -> Call {
        let op = self.next_op(mix);
        let key = self.rng.gen_range(0..f.names.len());
        let name = &f.names[key];
        let call = |method, path: String, body| Call { op, method, path, body, key, created: None };
        match op {
            Op::Encrypt => call(Method::PUT, format!("/v1/key/encrypt/{name}"), f.encrypt_body.clone()),
            Op::Decrypt => call(Method::PUT, format!("/v1/key/decrypt/{name}"), f.decrypt_bodies[key].clone()),
            Op::Generate => call(Method::PUT, format!("/v1/key/generate/{name}"), Bytes::from_static(b"{}")),
            Op::Hmac => call(Method::PUT, format!("/v1/key/hmac/{name}"), f.hmac_body.clone()),
            Op::Describe => call(Method::GET, format!("/v1/key/describe/{name}"), Bytes::new()),
            Op::List => call(Method::GET, format!("/v1/key/list/{STABLE_PREFIX}*"), Bytes::new()),
            Op::DecryptGarbage => call(Method::PUT, format!("/v1/key/decrypt/{name}"), f.garbage_body.clone()),
            Op::DescribeMissing => {
                self.seq += 1;
                call(Method::GET, format!("/v1/key/describe/soak-missing-{}-{}", self.id, self.seq), Bytes::new())
            }
            Op::Create => {
                self.seq += 1;
                let churn = format!("soak-c{}-{}", self.id, self.seq);
                Call {
                    created: Some(churn.clone()),
                    ..call(Method::PUT, format!("/v1/key/create/{churn}"), Bytes::new())
                }
            }
            Op::Delete => {
                // A delete that fails leaves the key untracked: it is never retried.
                let churn = self.own.pop_front().expect("next_op deletes only with a key in hand");
                call(Method::DELETE, format!("/v1/key/delete/{churn}"), Bytes::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_every_op_is_drawn() {
        let mix = Mix::new(&[]).unwrap();
        assert_eq!(mix.total, 10_000);
        let drawn: std::collections::BTreeSet<Op> = (0..mix.total).map(|d| mix.pick(d)).collect();
        assert_eq!(drawn.len(), MIX.len());
        let less = Mix::new(&[Op::List]).unwrap();
        assert!((0..less.total).all(|d| less.pick(d) != Op::List));
        assert!(Mix::new(&[Op::Create]).is_err());
        let provoked = MIX.iter().filter(|(op, _)| op.provoked()).map(|(_, w)| w).sum::<u32>();
        assert_eq!(provoked, 300);
    }

    #[test]
    fn churn_stays_bounded() {
        let f = Fixture {
            names: vec!["soak-k-0".into()],
            encrypt_body: Bytes::new(),
            plaintext_b64: String::new(),
            hmac_body: Bytes::new(),
            decrypt_bodies: vec![Bytes::new()],
            hmacs: vec![String::new()],
            garbage_body: Bytes::new(),
        };
        let mut w = Worker::new(3);
        let mix = Mix::new(&[]).unwrap();
        for _ in 0..100_000 {
            let call = w.plan(&f, &mix);
            w.own.extend(call.created);
            assert!(w.own.len() <= CHURN_KEYS_PER_CONNECTION);
        }
    }

    #[test]
    fn listing_must_hold_exactly_the_stable_keys() {
        let f = Fixture {
            names: vec!["soak-k-0".into(), "soak-k-1".into()],
            encrypt_body: Bytes::new(),
            plaintext_b64: String::new(),
            hmac_body: Bytes::new(),
            decrypt_bodies: Vec::new(),
            hmacs: Vec::new(),
            garbage_body: Bytes::new(),
        };
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n{\"name\":\"soak-k-1\"}\n").is_ok());
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n").is_err());
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n{\"name\":\"soak-c1-1\"}\n").is_err());
    }
}
