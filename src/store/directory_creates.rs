//! New synced users written many to a statement. A full round on a new tenant creates every
//! user, and a statement per row was a round trip each: on PostgreSQL over TLS the full
//! users phase of 50,000 users waited 6–7 s on the database for 4.7 s of its own CPU
//! (docs/benchmarks.md). A batch that fails on a constraint is retried a write at a time by
//! the sync (`sync::apply`), where a single create keeps its precise message.

use sqlx::{Any, AssertSqlSafe, Transaction};

use super::columns::{bind_directory_user, bind_profile};
use super::focused::value_rows;
use super::{Backend, DirectoryUser, PbxUser, StoreError};

/// Rows per statement: 20 values a PBX user (2,000 parameters), well under SQLite's limit
/// of 32,766 and PostgreSQL's of 65,535.
const USERS_PER_STATEMENT: usize = 100;

const PBX_USER_INSERT: &str = "INSERT INTO pbx_users (id, tenant_id, extension_number, username,
    display_name, first_name, last_name, email, mobile_phone, work_phone, title, department,
    office, enabled, source, ms365_oid, sync_disabled, sync_disabled_at, created_at, updated_at)
    VALUES";

/// An administrator-given role is kept, and an administrator's binding of the oid is never
/// overwritten.
const DIRECTORY_UPSERT: &str = "ON CONFLICT (tenant_id, oid) DO UPDATE SET upn = excluded.upn,
    pbx_user_id = excluded.pbx_user_id, extension = excluded.extension,
    display_name = excluded.display_name, email = excluded.email, enabled = excluded.enabled,
    source = excluded.source, updated_at = excluded.updated_at
    WHERE ms365_users.source = 'sync'";

/// A unique violation as a `Conflict` saying `message`; anything else as it is.
pub(super) fn conflict_or(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Query(e),
    }
}

/// Creates PBX users and their directory entries: the PBX users first, since a directory
/// entry names its PBX user. A taken extension or username is a `Conflict`.
pub(super) async fn create_users(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    created: &[(&PbxUser, &DirectoryUser)],
    now: i64,
) -> Result<(), StoreError> {
    let users: Vec<&PbxUser> = created.iter().map(|(u, _)| *u).collect();
    insert_pbx_users(tx, backend, &users).await.map_err(|e| {
        conflict_or(e, || match users.as_slice() {
            [user] => format!(
                "extension {} or username {} was taken meanwhile",
                user.extension_number, user.username
            ),
            _ => "an extension or username of this batch was taken meanwhile".into(),
        })
    })?;
    let directories: Vec<&DirectoryUser> = created.iter().map(|(_, d)| *d).collect();
    upsert_directories(tx, backend, &directories, now).await?;
    Ok(())
}

pub(super) async fn insert_pbx_users(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    users: &[&PbxUser],
) -> Result<(), sqlx::Error> {
    for chunk in users.chunks(USERS_PER_STATEMENT) {
        let sql = format!("{PBX_USER_INSERT} {}", value_rows(backend, chunk.len(), 20));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for u in chunk {
            q = q
                .bind(&u.id)
                .bind(&u.tenant_id)
                .bind(&u.extension_number)
                .bind(&u.username);
            q = bind_profile(q, &u.profile)
                .bind(i64::from(u.enabled))
                .bind(u.source.as_str())
                .bind(&u.ms365_oid)
                .bind(&u.sync_disabled)
                .bind(u.sync_disabled_at)
                .bind(u.created_at)
                .bind(u.updated_at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Creates or refreshes synced directory entries (each oid at most once per call:
/// PostgreSQL refuses a statement that upserts one row twice).
pub(super) async fn upsert_directories(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    entries: &[&DirectoryUser],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in entries.chunks(USERS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO ms365_users (tenant_id, oid, upn, pbx_user_id, extension, display_name,
             email, role, enabled, source, updated_at) VALUES {} {DIRECTORY_UPSERT}",
            value_rows(backend, chunk.len(), 11)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for u in chunk {
            q = bind_directory_user(q, u, now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::super::directory::{DirectoryWrite, PbxProfile, PbxUserSource};
    use super::super::test_db::{TestDb, add_tenant};
    use super::*;
    use crate::ids::{ObjectId, TenantId};

    fn create(t: &TenantId, n: usize) -> DirectoryWrite {
        let oid = ObjectId::new(format!("00000000-0000-0000-0000-{n:012}"));
        let user = PbxUser {
            id: format!("u{n}"),
            tenant_id: t.clone(),
            extension_number: format!("{}", 1000 + n),
            username: format!("user{n}"),
            profile: PbxProfile {
                display_name: format!("User {n}"),
                ..PbxProfile::default()
            },
            enabled: true,
            source: PbxUserSource::Ms365,
            ms365_oid: Some(oid.clone()),
            sync_disabled: None,
            sync_disabled_at: None,
            created_at: 1,
            updated_at: 1,
        };
        let directory = DirectoryUser {
            tenant_id: t.clone(),
            oid,
            upn: format!("user{n}@{t}.test"),
            pbx_user_id: user.id.clone(),
            extension: Some(user.extension_number.clone()),
            display_name: user.profile.display_name.clone(),
            email: None,
            role: Role::User,
            enabled: true,
            source: "sync".into(),
        };
        DirectoryWrite::Create {
            user: Box::new(user),
            directory: Box::new(directory),
        }
    }

    #[tokio::test]
    async fn runs_of_creates_span_statements_and_keep_their_order_with_other_writes() {
        let db = TestDb::new().await;
        let store = db.open(2).await.unwrap();
        let t = add_tenant(&store, "a").await;
        // 250 creates (three statements), a disable of one of them, then one more create.
        let mut writes: Vec<DirectoryWrite> = (0..250).map(|n| create(&t, n)).collect();
        let disabled = ObjectId::new("00000000-0000-0000-0000-000000000007");
        writes.push(DirectoryWrite::Disable {
            oid: disabled.clone(),
            reason: "removed".into(),
        });
        writes.push(create(&t, 250));
        store.apply_directory_writes(&t, &writes).await.unwrap();
        let users = store.pbx_users(&t).await.unwrap();
        assert_eq!(users.len(), 251);
        let directory = store.directory_users(&t).await.unwrap();
        assert_eq!(directory.len(), 251);
        let off = directory.iter().find(|d| d.oid == disabled).unwrap();
        assert!(!off.enabled, "the disable after the run of creates applied");
        let last = users.iter().find(|u| u.id == "u250").unwrap();
        assert_eq!(last.extension_number, "1250");
        assert_eq!(last.profile.display_name, "User 250");
    }

    #[tokio::test]
    async fn a_taken_extension_fails_the_whole_batch_and_names_a_single_create() {
        let db = TestDb::new().await;
        let store = db.open(2).await.unwrap();
        let t = add_tenant(&store, "a").await;
        store
            .apply_directory_writes(&t, &[create(&t, 1)])
            .await
            .unwrap();
        let mut taken = create(&t, 2);
        if let DirectoryWrite::Create { user, .. } = &mut taken {
            user.extension_number = "1001".into();
        }
        let batch = [create(&t, 3), taken.clone(), create(&t, 4)];
        let err = store.apply_directory_writes(&t, &batch).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains("of this batch")),
            "{err:?}"
        );
        assert_eq!(
            store.pbx_users(&t).await.unwrap().len(),
            1,
            "nothing of the batch stays"
        );
        assert_eq!(store.directory_users(&t).await.unwrap().len(), 1);
        let alone = store
            .apply_directory_writes(&t, &[taken])
            .await
            .unwrap_err();
        assert!(
            matches!(&alone, StoreError::Conflict(m) if m.contains("extension 1001 or username user2")),
            "{alone:?}"
        );
    }
}
