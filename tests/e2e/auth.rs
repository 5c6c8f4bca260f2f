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
    std::fs::write(&s.config_path, config).unwrap();
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
}
