//! Identities and authorization: admin, policy identity, stranger, no
//! certificate, skip_auth, deny-beats-allow, prefix vs glob patterns.

use crate::harness::{Ident, Setup, TestServer};

fn app_policy(app: &Ident) -> String {
    format!(
        r#"
[policy.app]
allow = ["/v1/key/create/app-*", "/v1/key/encrypt/app-*", "/v1/key/decrypt/app-*", "/v1/key/describe/app-?", "/v1/status"]
deny = ["/v1/key/create/app-internal*"]
identities = ["{}"]
"#,
        app.id
    )
}

#[tokio::test]
async fn admin_policy_identity_and_stranger() {
    let app = Ident::new("app");
    let stranger = Ident::new("stranger");
    let s = TestServer::start(&app_policy(&app));
    let admin = s.admin_client();
    let a = s.client(&app);
    let x = s.client(&stranger);

    // Prefix pattern (trailing * only) crosses into any name.
    a.put_empty("/v1/key/create/app-1").await.ok();
    a.put_empty("/v1/key/create/app-long-name").await.ok();
    // Deny beats allow.
    a.put_empty("/v1/key/create/app-internal-1").await.expect(403, "not authorized: insufficient permissions");
    // Not in the allow list.
    a.delete("/v1/key/delete/app-1").await.expect(403, "not authorized: insufficient permissions");
    a.put_empty("/v1/key/create/other").await.expect(403, "not authorized: insufficient permissions");
    // Glob pattern (`?`): one character only.
    a.get("/v1/key/describe/app-1").await.ok();
    a.get("/v1/key/describe/app-long-name").await.expect(403, "not authorized: insufficient permissions");
    // A stranger can do nothing but /version and self-describe.
    x.put_empty("/v1/key/create/app-2").await.expect(403, "not authorized: insufficient permissions");
    x.get("/v1/status").await.expect(403, "not authorized: insufficient permissions");
    x.get("/version").await.ok();
    let me = x.get("/v1/identity/self/describe").await;
    me.ok();
    assert_eq!(me.json()["identity"], stranger.id.as_str());
    assert_eq!(me.json()["admin"], false);
    // The admin can do everything.
    admin.delete("/v1/key/delete/app-1").await.ok();
    admin.put_empty("/v1/key/create/app-internal-1").await.ok();
}

#[tokio::test]
async fn no_certificate_is_refused_except_version_and_skip_auth_routes() {
    let s = TestServer::start("[api.\"/v1/ready\"]\nskip_auth = true\n");
    let anon = s.anonymous();
    anon.get("/version").await.ok();
    anon.get("/v1/ready").await.ok();
    anon.get("/v1/status").await.expect(400, "tls: client certificate is required");
    anon.put_empty("/v1/key/create/k").await.expect(400, "tls: client certificate is required");
    anon.get("/v1/identity/self/describe").await.expect(400, "tls: client certificate is required");
}

#[tokio::test]
async fn self_describe_shows_policy_to_every_caller() {
    let app = Ident::new("app");
    let s = TestServer::start(&app_policy(&app));
    let me = s.client(&app).get("/v1/identity/self/describe").await;
    me.ok();
    let v = me.json();
    assert_eq!(v["identity"], app.id.as_str());
    assert_eq!(v["admin"], false);
    assert_eq!(v["policy_name"], "app");
    assert!(v["allow"].as_object().unwrap().contains_key("/v1/key/create/app-*"));
    assert!(v["deny"].as_object().unwrap().contains_key("/v1/key/create/app-internal*"));
    let admin = s.admin_client().get("/v1/identity/self/describe").await.json();
    assert_eq!(admin["admin"], true);
    assert_eq!(admin["identity"], s.admin.id.as_str());
}

#[tokio::test]
async fn disabled_admin_has_no_special_rights() {
    let s = TestServer::start_with(Setup { disable_admin: true, ..Setup::default() });
    let c = s.admin_client();
    c.put_empty("/v1/key/create/k").await.expect(403, "not authorized: insufficient permissions");
    let me = c.get("/v1/identity/self/describe").await.json();
    assert_eq!(me["admin"], false);
}

#[tokio::test]
async fn sighup_reloads_policies_and_identities() {
    let app = Ident::new("app");
    let s = TestServer::start("");
    let c = s.client(&app);
    c.get("/v1/status").await.expect(403, "not authorized: insufficient permissions");
    let mut config = std::fs::read_to_string(&s.config_path).unwrap();
    config.push_str(&format!("[policy.status]\nallow = [\"/v1/status\"]\nidentities = [\"{}\"]\n", app.id));
    std::fs::write(&s.config_path, &config).unwrap();
    let good = config;
    s.signal("HUP");
    let mut ok = false;
    for _ in 0..100 {
        if c.get("/v1/status").await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "policy not reloaded; stderr:\n{}", s.stderr());
    // A broken config on reload keeps the old one serving.
    std::fs::write(&s.config_path, "this is = not [valid").unwrap();
    s.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.get("/v1/status").await.ok();
    assert!(s.stderr().contains("reload failed"), "{}", s.stderr());
    // So does a policy pattern no request path can match: the deny it was
    // meant to be would not be enforced. The log names policy and pattern.
    let mut config = good.clone();
    config.push_str("[policy.other]\nallow = [\"/v1/key/*\"]\ndeny = [\"/v1/key/encrypt/app-%73ecret\"]\n");
    std::fs::write(&s.config_path, config).unwrap();
    s.signal("HUP");
    let logged = "policy.other.deny[0]";
    for _ in 0..100 {
        if s.stderr().contains(logged) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stderr = s.stderr();
    assert!(stderr.contains(logged) && stderr.contains("app-%73ecret"), "{stderr}");
    c.get("/v1/status").await.ok();
}

/// An identity that is in no policy can do nothing but `/version`,
/// self-describe and `skip_auth` routes. Driven by the route table, so a new
/// route is covered without touching this test: every route, with every
/// method it answers, both generations' `Accept` headers, a name, the default
/// enclave and a body that would succeed for the admin, answers 403 — while
/// a policy allowing everything exists for someone else — and nothing the
/// stranger sent took effect.
#[tokio::test]
async fn an_identity_in_no_policy_is_refused_on_every_route() {
    use keyward_server::api::routes::{AuthClass, Methods, ROUTES};
    use serde_json::json;

    let stranger = Ident::new("stranger");
    let other = Ident::new("other");
    let s = TestServer::start(&format!(
        "[api.\"/v1/ready\"]\nskip_auth = true\n[policy.everything]\nallow = [\"/v1/*\", \"/version\"]\nidentities = [\"{}\"]\n",
        other.id
    ));
    let admin = s.admin_client();
    admin.put_empty("/v1/key/create/k").await.ok();
    let ct = admin.encrypt("k", b"plaintext", None).await;
    let x = s.client(&stranger);

    let key = crate::harness::b64(&[7u8; 32]);
    // A body each handler would accept from the admin.
    let body_for = |path: &str| match path {
        "/v1/key/import/" => json!({"key": key, "cipher": "AES256"}),
        "/v1/key/encrypt/" => json!({"plaintext": "aGk="}),
        "/v1/key/decrypt/" => json!({"ciphertext": crate::harness::b64(&ct)}),
        "/v1/key/bulk/decrypt/" => json!([{"ciphertext": crate::harness::b64(&ct)}]),
        "/v1/key/hmac/" => json!({"message": "aGk="}),
        "/v1/policy/write/" | "/v1/policy/create/" => json!({"allow": ["/v1/*"]}),
        "/v1/policy/assign/" => json!({"identity": stranger.id}),
        _ => json!({}),
    };
    let mut refused = 0;
    for route in ROUTES {
        let methods: &[&str] = match route.methods {
            Methods::Get => &["GET", "HEAD"],
            Methods::Write => &["PUT", "POST"],
            Methods::Delete => &["DELETE"],
        };
        let paths = if route.takes_name() {
            vec![format!("{}k", route.path), format!("{}k?enclave=default", route.path), format!("{}*", route.path)]
        } else {
            vec![route.path.to_string()]
        };
        let skip_auth = route.path == "/v1/ready";
        for method in methods {
            for path in &paths {
                for accept in ["", "application/json", "application/x-ndjson"] {
                    let body = body_for(route.path).to_string();
                    let mut headers = vec![("content-type", "application/json")];
                    if !accept.is_empty() {
                        headers.push(("accept", accept));
                    }
                    let send_body = (route.methods == Methods::Write).then_some(body.as_bytes());
                    let r = x.send(method, path, send_body, &headers).await;
                    let what = format!("{method} {path} (accept {accept:?})");
                    match route.auth {
                        AuthClass::None | AuthClass::Identify => assert_eq!(r.status, 200, "{what}: {}", r.text()),
                        AuthClass::Policy if skip_auth => assert_eq!(r.status, 200, "{what}: {}", r.text()),
                        AuthClass::Policy => {
                            assert_eq!(r.status, 403, "{what}: {}", r.text());
                            if *method != "HEAD" {
                                assert_eq!(r.message(), "not authorized: insufficient permissions", "{what}");
                            }
                            refused += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(refused > 150, "only {refused} requests were checked: is the route table empty?");

    // Nothing took effect: the key is there and unchanged, no policy was
    // written or assigned, and the stranger is still a stranger.
    let r = admin.decrypt("k", &ct, None).await;
    r.ok();
    assert_eq!(crate::harness::unb64(r.json()["plaintext"].as_str().unwrap()), b"plaintext");
    let names: Vec<_> = admin.get("/v1/policy/list/*").await.lines().into_iter().map(|l| l["name"].clone()).collect();
    assert_eq!(names, vec![serde_json::Value::from("everything")]);
    let me = x.get("/v1/identity/self/describe").await.json();
    assert_eq!(me["admin"], false);
    assert!(me["policy_name"].as_str().unwrap_or_default().is_empty(), "{me}");
    x.get("/v1/key/describe/k").await.expect(403, "not authorized: insufficient permissions");
    // The policy that allows everything does work for its own identity.
    s.client(&other).get("/v1/key/describe/k").await.ok();
}
