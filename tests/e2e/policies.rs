//! Policy and identity routes of both generations.

use serde_json::json;

use crate::harness::{Ident, TestServer};

fn config(app: &Ident) -> String {
    format!(
        "[policy.app]\nallow = [\"/v1/key/create/*\"]\ndeny = [\"/v1/key/create/secret*\"]\nidentities = [\"{}\"]\n[policy.backup]\nallow = [\"/v1/key/list/*\"]\n",
        app.id
    )
}

#[tokio::test]
async fn describe_read_list_policies() {
    let app = Ident::new("app");
    let s = TestServer::start(&config(&app));
    let c = s.admin_client();
    let d = c.get("/v1/policy/describe/app").await;
    d.ok();
    assert_eq!(d.json()["name"], "app");
    assert_eq!(d.json()["created_by"], s.admin.id.as_str());
    c.get("/v1/policy/describe/nope").await.expect(404, "policy does not exist");
    let r = c.get("/v1/policy/read/app").await;
    r.ok();
    assert_eq!(r.json()["allow"], json!({"/v1/key/create/*": {}}));
    assert_eq!(r.json()["deny"], json!({"/v1/key/create/secret*": {}}));
    c.get("/v1/policy/read/nope").await.expect(404, "policy does not exist");
    let l = c.get_json("/v1/policy/list/*").await;
    assert_eq!(l.json(), json!({"names": ["app", "backup"], "continue_at": ""}));
    let l = c.get_json("/v1/policy/list/b").await;
    assert_eq!(l.json()["names"], json!(["backup"]));
    let l = c.get("/v1/policy/list/*").await;
    assert_eq!(l.content_type, "application/x-ndjson");
    let names: Vec<_> = l.lines().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["app", "backup"]);
}

#[tokio::test]
async fn identities_describe_and_list() {
    let app = Ident::new("app");
    let s = TestServer::start(&config(&app));
    let c = s.admin_client();
    let d = c.get(&format!("/v1/identity/describe/{}", app.id)).await;
    d.ok();
    assert_eq!(d.json()["policy"], "app");
    let d = c.get(&format!("/v1/identity/describe/{}", s.admin.id)).await;
    assert_eq!(d.json()["admin"], true);
    c.get(&format!("/v1/identity/describe/{}", "0".repeat(64))).await.expect(404, "identity does not exist");
    let l = c.get_json("/v1/identity/list/*").await;
    let mut want = vec![app.id.clone(), s.admin.id.clone()];
    want.sort();
    assert_eq!(l.json()["identities"], json!(want));
    let l = c.get("/v1/identity/list/*").await;
    let lines = l.lines();
    assert_eq!(lines.len(), 1, "the admin is not listed in the old ndjson form");
    assert_eq!(lines[0]["identity"], app.id.as_str());
    assert_eq!(lines[0]["policy"], "app");
}

#[tokio::test]
async fn old_api_writes_assigns_and_deletes_policies() {
    let app = Ident::new("app");
    let s = TestServer::start("");
    let admin = s.admin_client();
    let a = s.client(&app);
    a.put_empty("/v1/key/create/k").await.expect(403, "not authorized: insufficient permissions");
    // Old-API policies are globs: `*` stays within one path segment.
    admin
        .post("/v1/policy/write/p", &json!({"allow": ["/v1/key/create/*"], "deny": ["/v1/key/create/no*"]}))
        .await
        .ok();
    admin.post("/v1/policy/assign/p", &json!({"identity": app.id})).await.ok();
    a.put_empty("/v1/key/create/k").await.ok();
    a.put_empty("/v1/key/create/nope").await.expect(403, "not authorized: insufficient permissions");
    admin.post("/v1/policy/assign/p", &json!({"identity": ""})).await.expect(400, "identity is unknown");
    admin
        .post("/v1/policy/assign/p", &json!({"identity": s.admin.id}))
        .await
        .expect(403, "identity cannot assign policy to itself");
    admin.delete("/v1/policy/delete/p").await.ok();
    admin.delete("/v1/policy/delete/p").await.ok();
    a.put_empty("/v1/key/create/k2").await.expect(403, "not authorized: insufficient permissions");
    // Re-create and forget the identity instead.
    admin.post("/v1/policy/write/p", &json!({"allow": ["/v1/key/create/*"]})).await.ok();
    a.put_empty("/v1/key/create/k3").await.ok();
    admin.delete(&format!("/v1/identity/delete/{}", app.id)).await.ok();
    a.put_empty("/v1/key/create/k4").await.expect(403, "not authorized: insufficient permissions");
    admin.delete(&format!("/v1/identity/forget/{}", app.id)).await.expect(404, "identity does not exist");
}

#[tokio::test]
async fn enclaves_other_than_default_do_not_exist() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/k?enclave=default").await.ok();
    c.put_empty("/v1/key/create/k2?enclave=").await.ok();
    c.put_empty("/v1/key/create/k3?enclave=tenant").await.expect(404, "enclave does not exist");
    c.send("POST", "/v1/enclave/create/e", None, &[]).await.expect(501, "creating encalves is not supported");
    c.delete("/v1/enclave/delete/e").await.expect(501, "deleting encalves is not supported");
}
