use codebox_core::{sign_jwt, CoreError, API_KEY_PREFIX};
use serde_json::json;

use crate::support::{Fixture, JWT_SECRET};

fn exp_in(seconds: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + seconds
}

#[tokio::test]
async fn api_keys_are_hashed_and_revocable() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let (key, record) = fixture
        .core
        .create_api_key(&alice, Some("ci".into()))
        .await
        .expect("creates");
    assert!(key.starts_with(API_KEY_PREFIX));
    assert_eq!(
        key.len(),
        API_KEY_PREFIX.len() + 43,
        "32 bytes of unpadded base64url"
    );
    assert!(key.starts_with(&record.prefix));
    let stored = fixture
        .store
        .list_api_keys(Some(&alice.id))
        .await
        .expect("lists");
    assert_eq!(stored.len(), 1);
    // Only the keyed hash is stored, so looking up the plaintext finds nothing.
    assert!(fixture
        .store
        .find_api_key(&key)
        .await
        .expect("looks up")
        .is_none());
    let hash = fixture.core.accounts().hash_api_key(&key);
    assert_eq!(hash.len(), 64);
    assert!(fixture
        .store
        .find_api_key(&hash)
        .await
        .expect("looks up")
        .is_some());

    let user = fixture
        .core
        .authenticate_api_key(&key)
        .await
        .expect("valid");
    assert_eq!(user.id, alice.id);
    for wrong in [
        "",
        "cbx_",
        "nope",
        &format!("{key}x"),
        &key[..key.len() - 1],
    ] {
        let result = fixture.core.authenticate_api_key(wrong).await;
        assert!(matches!(result, Err(CoreError::Unauthorized)), "{wrong:?}");
    }
    fixture
        .core
        .accounts()
        .revoke_api_key(record.id.as_str())
        .await
        .expect("revokes");
    assert!(matches!(
        fixture.core.authenticate_api_key(&key).await,
        Err(CoreError::Unauthorized)
    ));
    let again = fixture
        .core
        .accounts()
        .revoke_api_key(record.id.as_str())
        .await;
    assert!(matches!(again, Err(CoreError::NotFound)));
}

#[tokio::test]
async fn imported_bootstrap_keys_work_and_are_checked() {
    let fixture = Fixture::new().await;
    let admin = fixture
        .core
        .create_user("admin", true)
        .await
        .expect("creates");
    let key = "cbx_operator-chosen-key-0123456789";
    fixture
        .core
        .accounts()
        .import_api_key(&admin, key, None)
        .await
        .expect("imports");
    assert_eq!(
        fixture
            .core
            .authenticate_api_key(key)
            .await
            .expect("valid")
            .id,
        admin.id
    );
    for bad in [
        "short",
        "cbx_tooshort",
        "cbx_has whitespace in the key 12345",
    ] {
        let result = fixture
            .core
            .accounts()
            .import_api_key(&admin, bad, None)
            .await;
        assert!(
            matches!(result, Err(CoreError::Validation { .. })),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn jwts_resolve_the_user_by_id_or_name() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let by_name = sign_jwt(&json!({"sub": "alice", "exp": exp_in(60)}), JWT_SECRET);
    assert_eq!(
        fixture
            .core
            .authenticate_jwt(&by_name)
            .await
            .expect("valid")
            .id,
        alice.id
    );
    let by_id = sign_jwt(
        &json!({"sub": alice.id.as_str(), "exp": exp_in(60)}),
        JWT_SECRET,
    );
    assert_eq!(
        fixture
            .core
            .authenticate_jwt(&by_id)
            .await
            .expect("valid")
            .id,
        alice.id
    );
    let unknown = sign_jwt(&json!({"sub": "nobody", "exp": exp_in(60)}), JWT_SECRET);
    let expired = sign_jwt(&json!({"sub": "alice", "exp": exp_in(-3600)}), JWT_SECRET);
    let no_exp = sign_jwt(&json!({"sub": "alice"}), JWT_SECRET);
    let wrong_key = sign_jwt(
        &json!({"sub": "alice", "exp": exp_in(60)}),
        b"another-secret",
    );
    for token in [unknown, expired, no_exp, wrong_key] {
        assert!(matches!(
            fixture.core.authenticate_jwt(&token).await,
            Err(CoreError::Unauthorized)
        ));
    }
}

#[tokio::test]
async fn user_names_are_unique() {
    let fixture = Fixture::new().await;
    fixture.user("alice").await;
    let error = fixture
        .core
        .create_user("alice", false)
        .await
        .expect_err("taken");
    assert!(matches!(error, CoreError::Conflict { .. }), "{error:?}");
}
