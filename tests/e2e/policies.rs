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
    c.send("POST", "/v1/enclave/create/e", None, &[]).await.expect(501, "creating enclaves is not supported");
    c.delete("/v1/enclave/delete/e").await.expect(501, "deleting enclaves is not supported");
    // kes-go names the enclave in a header: the same answers as the query.
    let tenant = [("kes-enclave", "tenant")];
    c.send("PUT", "/v1/key/create/k4", None, &tenant).await.expect(404, "enclave does not exist");
    c.send("GET", "/v1/key/describe/k", None, &tenant).await.expect(404, "enclave does not exist");
    c.send("GET", "/v1/key/describe/k", None, &[("kes-enclave", "default")]).await.ok();
    c.get("/v1/key/describe/k4").await.expect(404, "key does not exist");
    // A 501 is an answer, not a server fault: nothing is logged as an error.
    assert!(!s.stderr().contains("enclaves is not supported"), "{}", s.stderr());
}

/// Old clients send Go's untagged field names (`Allow`, `Deny`, `Info`) and
/// kes-go sends patterns as object keys to `/v1/policy/create`; both are
/// stored and enforced, not silently stored empty. Two keys for one field
/// are refused.
#[tokio::test]
async fn policies_written_with_go_field_names_are_enforced() {
    let app = Ident::new("app");
    let s = TestServer::start("");
    let admin = s.admin_client();
    let a = s.client(&app);
    let v019 = json!({"Allow": ["/v1/key/create/*"], "Deny": ["/v1/key/create/no*"]});
    let v022 = json!({"Allow": ["/v1/key/create/*"], "Deny": ["/v1/key/create/no*"],
                      "Info": {"name": "", "created_at": "0001-01-01T00:00:00Z"}});
    let kes_go = json!({"Allow": {"/v1/key/create/*": {}}, "Deny": {"/v1/key/create/no*": {}},
                        "CreatedAt": "0001-01-01T00:00:00Z", "CreatedBy": ""});
    for (i, (path, body)) in
        [("/v1/policy/write/p", v019), ("/v1/policy/write/p", v022), ("/v1/policy/create/p", kes_go)].iter().enumerate()
    {
        admin.delete(&format!("/v1/identity/delete/{}", app.id)).await;
        admin.post(path, body).await.ok();
        let read = admin.get("/v1/policy/read/p").await.json();
        assert_eq!(read["allow"], json!({"/v1/key/create/*": {}}), "{path}: {read}");
        assert_eq!(read["deny"], json!({"/v1/key/create/no*": {}}), "{path}: {read}");
        admin.post("/v1/policy/assign/p", &json!({"Identity": app.id})).await.ok();
        a.put_empty(&format!("/v1/key/create/k{i}")).await.ok();
        a.put_empty(&format!("/v1/key/create/no{i}")).await.expect(403, "not authorized: insufficient permissions");
        a.delete(&format!("/v1/key/delete/k{i}")).await.expect(403, "not authorized: insufficient permissions");
    }
    // kes-go's policies are of the 2023 generation: a trailing `*` is a
    // prefix that crosses `/`.
    admin.delete(&format!("/v1/identity/delete/{}", app.id)).await;
    admin.put("/v1/policy/create/wide", &json!({"Allow": {"/v1/key/*": {}}})).await.ok();
    admin.post("/v1/policy/assign/wide", &json!({"identity": app.id})).await.ok();
    a.put_empty("/v1/key/create/deep").await.ok();
    let twice = br#"{"allow": ["/v1/*"], "Allow": ["/v1/key/*"]}"#;
    let r = admin.send("POST", "/v1/policy/write/q", Some(twice), &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    admin.get("/v1/policy/read/q").await.expect(404, "policy does not exist");
    // A pattern no request path can match is refused, naming it.
    let r = admin.post("/v1/policy/write/q", &json!({"Deny": ["/v1/key/encrypt/app-%73ecret"]})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.message().contains("/v1/key/encrypt/app-%73ecret"), "{}", r.message());
}
