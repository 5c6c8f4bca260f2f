//! The route table: every path of both KES API generations, with its methods,
//! body limit, timeout and authentication class.

use std::time::Duration;

use http::Method;

/// Which handler serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    Version,
    Ready,
    Status,
    Metrics,
    Api,
    KeyCreate,
    KeyImport,
    KeyDescribe,
    KeyDelete,
    KeyList,
    KeyGenerate,
    KeyEncrypt,
    KeyDecrypt,
    KeyBulkDecrypt,
    KeyHmac,
    PolicyDescribe,
    PolicyRead,
    PolicyWrite,
    PolicyAssign,
    PolicyList,
    PolicyDelete,
    IdentityDescribe,
    IdentitySelf,
    IdentityList,
    IdentityDelete,
    LogError,
    LogAudit,
    EnclaveCreate,
    EnclaveDelete,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthClass {
    /// Anyone, with or without a certificate (`/version`, `skip_auth` routes).
    None,
    /// Any client certificate, no policy check (`/v1/identity/self/describe`).
    Identify,
    /// The admin or an identity whose policy allows the path.
    Policy,
}

/// Methods a route answers. Where KES expects PUT, POST is accepted too, and
/// the old generation's POST routes accept PUT: one table serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    Get,
    Write,
    Delete,
}

impl Methods {
    pub fn allows(self, m: &Method) -> bool {
        match self {
            Methods::Get => m == Method::GET || m == Method::HEAD,
            Methods::Write => m == Method::PUT || m == Method::POST,
            Methods::Delete => m == Method::DELETE,
        }
    }

    /// The method named in `/v1/api` and in 405 answers.
    pub fn primary(self) -> &'static str {
        match self {
            Methods::Get => "GET",
            Methods::Write => "PUT",
            Methods::Delete => "DELETE",
        }
    }
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub handler: Handler,
    /// The path, ending in `/` when a name follows.
    pub path: &'static str,
    pub methods: Methods,
    /// Largest accepted request body in bytes (0: none read).
    pub max_body: usize,
    /// Zero means no timeout (log streams).
    pub timeout: Duration,
    pub auth: AuthClass,
}

impl Route {
    /// Whether a name follows the path.
    pub fn takes_name(&self) -> bool {
        self.path.ends_with('/')
    }
}

const MIB: usize = 1 << 20;
/// Decrypt bodies carry what encrypt and generate answered: a ciphertext 44
/// bytes longer than the plaintext (60 more in base64) and the same context,
/// so they may exceed the 1 MiB an encrypt body may have by that much; the
/// margin leaves room for whitespace a client adds.
const CIPHERTEXT_BODY: usize = MIB + 64 * 1024;
const S15: Duration = Duration::from_secs(15);
const S10: Duration = Duration::from_secs(10);

const fn route(
    handler: Handler,
    path: &'static str,
    methods: Methods,
    max_body: usize,
    timeout: Duration,
    auth: AuthClass,
) -> Route {
    Route { handler, path, methods, max_body, timeout, auth }
}

use AuthClass::*;
use Handler::*;
use Methods::*;

/// All routes. Order matters only for shared prefixes: longer paths first.
pub const ROUTES: &[Route] = &[
    route(Version, "/version", Get, 0, S10, None),
    route(Ready, "/v1/ready", Get, 0, S15, Policy),
    route(Status, "/v1/status", Get, 0, S15, Policy),
    route(Metrics, "/v1/metrics", Get, 0, S15, Policy),
    route(Api, "/v1/api", Get, 0, S10, Policy),
    route(KeyCreate, "/v1/key/create/", Write, 0, S15, Policy),
    route(KeyImport, "/v1/key/import/", Write, MIB, S15, Policy),
    route(KeyDescribe, "/v1/key/describe/", Get, 0, S15, Policy),
    route(KeyDelete, "/v1/key/delete/", Delete, 0, S15, Policy),
    route(KeyList, "/v1/key/list/", Get, 0, S15, Policy),
    route(KeyGenerate, "/v1/key/generate/", Write, MIB, S15, Policy),
    route(KeyEncrypt, "/v1/key/encrypt/", Write, MIB, S15, Policy),
    route(KeyDecrypt, "/v1/key/decrypt/", Write, CIPHERTEXT_BODY, S15, Policy),
    route(KeyBulkDecrypt, "/v1/key/bulk/decrypt/", Write, CIPHERTEXT_BODY, S15, Policy),
    route(KeyHmac, "/v1/key/hmac/", Write, MIB, S15, Policy),
    route(PolicyDescribe, "/v1/policy/describe/", Get, 0, S15, Policy),
    route(PolicyRead, "/v1/policy/read/", Get, 0, S15, Policy),
    route(PolicyWrite, "/v1/policy/write/", Write, MIB, S15, Policy),
    // kes-go's `CreatePolicy` (2023): the same write, patterns as objects.
    route(PolicyWrite, "/v1/policy/create/", Write, MIB, S15, Policy),
    route(PolicyAssign, "/v1/policy/assign/", Write, 1024, S15, Policy),
    route(PolicyList, "/v1/policy/list/", Get, 0, S15, Policy),
    route(PolicyDelete, "/v1/policy/delete/", Delete, 0, S15, Policy),
    route(IdentitySelf, "/v1/identity/self/describe", Get, 0, S15, Identify),
    route(IdentityDescribe, "/v1/identity/describe/", Get, 0, S15, Policy),
    route(IdentityList, "/v1/identity/list/", Get, 0, S15, Policy),
    route(IdentityDelete, "/v1/identity/delete/", Delete, 0, S15, Policy),
    route(IdentityDelete, "/v1/identity/forget/", Delete, 0, S15, Policy),
    route(LogError, "/v1/log/error", Get, 0, Duration::ZERO, Policy),
    route(LogAudit, "/v1/log/audit", Get, 0, Duration::ZERO, Policy),
    route(EnclaveCreate, "/v1/enclave/create/", Write, 0, S15, Policy),
    route(EnclaveDelete, "/v1/enclave/delete/", Delete, 0, S15, Policy),
];

/// Finds the route for `path`, returning it and the name that follows it.
///
/// A named route's path without its trailing slash (`/v1/key/create`) matches
/// with an empty name, so the client gets a clear "invalid name" answer.
pub fn find(path: &str) -> Option<(&'static Route, &str)> {
    for r in ROUTES {
        if r.takes_name() {
            if let Some(name) = path.strip_prefix(r.path) {
                return Some((r, name));
            }
            if path.len() + 1 == r.path.len() && r.path.starts_with(path) {
                return Some((r, ""));
            }
        } else if path == r.path {
            return Some((r, ""));
        }
    }
    Option::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_names() {
        let (r, n) = find("/v1/key/create/my-key").unwrap();
        assert_eq!((r.handler, n), (KeyCreate, "my-key"));
        let (r, n) = find("/v1/key/create").unwrap();
        assert_eq!((r.handler, n), (KeyCreate, ""));
        let (r, n) = find("/v1/key/bulk/decrypt/k").unwrap();
        assert_eq!((r.handler, n), (KeyBulkDecrypt, "k"));
        assert_eq!(find("/v1/identity/self/describe").unwrap().0.handler, IdentitySelf);
        assert_eq!(find("/v1/identity/forget/ab").unwrap().0.handler, IdentityDelete);
        assert!(find("/v1/status/").is_none());
        assert!(find("/v1/nothing").is_none());
        assert!(find("/").is_none());
        assert_eq!(find("/v1/key/create/a/b").unwrap().1, "a/b");
    }

    #[test]
    fn put_routes_accept_post() {
        let (r, _) = find("/v1/key/encrypt/k").unwrap();
        assert!(r.methods.allows(&Method::PUT) && r.methods.allows(&Method::POST));
        assert!(!r.methods.allows(&Method::GET));
    }
}
