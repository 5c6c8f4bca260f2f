//! The keystore contract: what every keystore backend must do, whatever
//! language it is written in, as one check a plugin author (`keyward plugin
//! test FILE`) and the test suites run against any [`Keystore`].
//!
//! It asserts: the first broken rule panics with a message saying which (run
//! it in a task and read the panic to report it).

use std::sync::Arc;

use keyward_core::keystore::{Keystore, StoreError};

/// Checks the keystore contract (`wit/keystore.wit`) against `store`, which
/// must be empty and must allow several concurrent calls.
///
/// Covers: `status`; `create`/`get`/`delete` with `exists` and `not-found`;
/// values of every byte, empty and large; non-ASCII names; `list` by prefix
/// with paging (`limit`, `next`, `continue-at` inclusive, `limit = 0`), in
/// ascending byte order; concurrent `create` of one name with exactly one
/// winner whose value is the one stored.
pub async fn keystore_contract(store: Arc<dyn Keystore>) {
    let ks = store.as_ref();

    // status and an empty listing.
    ks.status().await.expect("status of a healthy store");
    let empty = ks.list("", "", 0).await.unwrap();
    assert!(empty.names.is_empty(), "store is not empty: {:?}", empty.names);
    assert_eq!(empty.next, "", "an empty listing has no next");

    // create / get / exists / not-found.
    ks.create("my-key", b"value-1").await.unwrap();
    assert_eq!(
        ks.create("my-key", b"other").await,
        Err(StoreError::Exists),
        "create of a taken name must answer exists"
    );
    assert_eq!(ks.get("my-key").await.unwrap(), b"value-1", "create must not overwrite");
    assert_eq!(ks.get("missing").await, Err(StoreError::NotFound), "get of a missing name must answer not-found");

    // delete.
    ks.delete("my-key").await.unwrap();
    assert_eq!(ks.delete("my-key").await, Err(StoreError::NotFound), "delete of a missing name must answer not-found");
    assert_eq!(ks.get("my-key").await, Err(StoreError::NotFound), "a deleted key must be gone");
    // A deleted name can be created again.
    ks.create("my-key", b"value-2").await.unwrap();
    assert_eq!(ks.get("my-key").await.unwrap(), b"value-2", "a deleted name must be creatable again");
    ks.delete("my-key").await.unwrap();

    // Values are opaque bytes: empty, every byte value, large.
    ks.create("empty", b"").await.unwrap();
    assert_eq!(ks.get("empty").await.unwrap(), b"", "an empty value must round-trip");
    let binary: Vec<u8> = (0..=255).collect();
    ks.create("binary", &binary).await.unwrap();
    assert_eq!(ks.get("binary").await.unwrap(), binary, "every byte value must round-trip");
    let large: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    ks.create("large", &large).await.unwrap();
    assert_eq!(ks.get("large").await.unwrap(), large, "a 256 KiB value must round-trip");
    // Names are UTF-8, not just ASCII.
    ks.create("schlüssel-ключ", b"utf8").await.unwrap();
    assert_eq!(ks.get("schlüssel-ключ").await.unwrap(), b"utf8", "non-ASCII names must work");
    for n in ["empty", "binary", "large", "schlüssel-ключ"] {
        ks.delete(n).await.unwrap();
    }

    // list: prefix, ascending order, paging.
    for i in (1..=25).rev() {
        ks.create(&format!("k{i:02}"), b"v").await.unwrap();
    }
    ks.create("other", b"v").await.unwrap();
    ks.create("j-before", b"v").await.unwrap();
    let p1 = ks.list("k", "", 10).await.unwrap();
    assert_eq!(
        p1.names,
        (1..=10).map(|i| format!("k{i:02}")).collect::<Vec<_>>(),
        "list: the first page by prefix, ascending, `limit` names"
    );
    assert_eq!(p1.next, "k11", "list: next is the first name not returned");
    let p2 = ks.list("k", &p1.next, 10).await.unwrap();
    assert_eq!(p2.names, (11..=20).map(|i| format!("k{i:02}")).collect::<Vec<_>>(), "list: continue-at is inclusive");
    assert_eq!(p2.next, "k21", "list: next of the second page");
    let p3 = ks.list("k", &p2.next, 10).await.unwrap();
    assert_eq!(p3.names, (21..=25).map(|i| format!("k{i:02}")).collect::<Vec<_>>(), "list: the last page");
    assert_eq!(p3.next, "", "the last page has no next");
    // An exact page: nothing is left, so no next.
    let exact = ks.list("k", "k16", 10).await.unwrap();
    assert_eq!(exact.names.len(), 10, "list: an exact last page");
    assert_eq!(exact.next, "", "list: an exact last page has no next");
    // limit = 0 is the backend's own page size; 27 names fit any sane one.
    let all = ks.list("", "", 0).await.unwrap();
    let mut expected: Vec<String> = (1..=25).map(|i| format!("k{i:02}")).collect();
    expected.insert(0, "j-before".into());
    expected.push("other".into());
    assert_eq!(
        all.names, expected,
        "list: limit 0 (the backend's page size) and an empty prefix list everything, ascending"
    );
    assert_eq!(all.next, "", "list: a complete listing has no next");
    // No match; continue-at exactly on a name (inclusive) and between names.
    assert!(ks.list("zzz", "", 10).await.unwrap().names.is_empty(), "list: a prefix nothing matches");
    assert_eq!(ks.list("k", "k25", 10).await.unwrap().names, vec!["k25"], "list: continue-at on a name includes it");
    assert_eq!(ks.list("k", "k245", 10).await.unwrap().names, vec!["k25"], "list: continue-at between names");
    assert!(ks.list("k", "k26", 10).await.unwrap().names.is_empty(), "list: continue-at past the last name");
    // Deleted names disappear from listings.
    ks.delete("k01").await.unwrap();
    assert_eq!(ks.list("k0", "", 3).await.unwrap().names, vec!["k02", "k03", "k04"], "list: deleted names disappear");
    for n in expected.iter().filter(|n| *n != "k01") {
        ks.delete(n).await.unwrap();
    }
    assert!(ks.list("", "", 0).await.unwrap().names.is_empty(), "list: every name deleted, nothing listed");

    // Concurrent creates of one name: exactly one wins, and its value is kept.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { (i, store.create("race", format!("v{i}").as_bytes()).await) }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(StoreError::Exists)) => {}
            (_, Err(e)) => panic!("concurrent create: unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "16 concurrent creates of one name: exactly one must win (winners: {winners:?})");
    assert_eq!(
        ks.get("race").await.unwrap(),
        format!("v{}", winners[0]).into_bytes(),
        "the concurrent winner's value must be the one stored"
    );
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["race"], "list after the concurrent creates");
    ks.delete("race").await.unwrap();
    ks.status().await.unwrap();
}
