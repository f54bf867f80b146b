//! Contacts synced from Outlook, in PortSIP's contact fields: personal contacts (one book per
//! PBX user, from the user's default Contacts folder) and company contacts (one book per
//! shared mailbox). Rows are keyed by the Graph contact id (`source_id`) within their book,
//! so a sync can upsert and remove exactly what Graph reports. Searched lists back the
//! directory API.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::focused::{IDS_PER_STATEMENT, placeholders, value_rows};
use super::{Backend, Store, StoreError, now_epoch};
use crate::ids::TenantId;

/// Schema of migration 7 (the same SQL on SQLite and PostgreSQL).
pub(super) const MIGRATION: &str = "
CREATE TABLE personal_contacts (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    owner_pbx_user_id  TEXT NOT NULL,
    source_id          TEXT NOT NULL,
    name TEXT NOT NULL, email TEXT NOT NULL, company TEXT NOT NULL, title TEXT NOT NULL,
    business TEXT NOT NULL, business2 TEXT NOT NULL, mobile_phone TEXT NOT NULL,
    mobile_phone2 TEXT NOT NULL, home_phone TEXT NOT NULL, home_phone2 TEXT NOT NULL,
    other TEXT NOT NULL, business_fax TEXT NOT NULL, home_fax TEXT NOT NULL,
    address TEXT NOT NULL, notes TEXT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, owner_pbx_user_id, source_id)
);
CREATE TABLE company_contacts (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    mailbox     TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    name TEXT NOT NULL, email TEXT NOT NULL, company TEXT NOT NULL, title TEXT NOT NULL,
    business TEXT NOT NULL, business2 TEXT NOT NULL, mobile_phone TEXT NOT NULL,
    mobile_phone2 TEXT NOT NULL, home_phone TEXT NOT NULL, home_phone2 TEXT NOT NULL,
    other TEXT NOT NULL, business_fax TEXT NOT NULL, home_fax TEXT NOT NULL,
    address TEXT NOT NULL, notes TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, mailbox, source_id)
);";

/// PortSIP's contact fields; an empty string is an absent value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContactFields {
    pub name: String,
    pub email: String,
    pub company: String,
    pub title: String,
    pub business: String,
    pub business2: String,
    pub mobile_phone: String,
    pub mobile_phone2: String,
    pub home_phone: String,
    pub home_phone2: String,
    pub other: String,
    pub business_fax: String,
    pub home_fax: String,
    pub address: String,
    pub notes: String,
}

pub(super) const FIELD_COLUMNS: &str = "name, email, company, title, business, business2, mobile_phone, \
    mobile_phone2, home_phone, home_phone2, other, business_fax, home_fax, address, notes";

/// The `SET` list of the contact upsert: every field from the incoming row.
pub(super) const UPDATE_FIELDS: &str = "name = excluded.name, email = excluded.email, \
    company = excluded.company, title = excluded.title, business = excluded.business, \
    business2 = excluded.business2, mobile_phone = excluded.mobile_phone, \
    mobile_phone2 = excluded.mobile_phone2, home_phone = excluded.home_phone, \
    home_phone2 = excluded.home_phone2, other = excluded.other, \
    business_fax = excluded.business_fax, home_fax = excluded.home_fax, \
    address = excluded.address, notes = excluded.notes, updated_at = excluded.updated_at";
/// Contacts per upsert statement: one statement per Graph page (up to 200 contacts) in two
/// or three, instead of one per contact. 19 values a row: 1,900 in all, far below both
/// backends' limits (SQLite 32,766, PostgreSQL 65,535).
const CONTACTS_PER_STATEMENT: usize = 100;

/// One contact row to write: owner (PBX user or mailbox), Graph id, fields.
pub(super) type ContactRow<'a> = (&'a str, &'a str, &'a ContactFields);

/// Upserts `rows` into `book`'s table (every row's owner is its own), a statement per
/// [`CONTACTS_PER_STATEMENT`] rows.
pub(super) async fn write_rows(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    tenant_id: &TenantId,
    book: &ContactBook,
    rows: &[ContactRow<'_>],
) -> Result<(), StoreError> {
    let (table, owner_col) = (book.table(), book.owner_column());
    let now = now_epoch();
    for chunk in rows.chunks(CONTACTS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO {table} (tenant_id, {owner_col}, source_id, {FIELD_COLUMNS}, updated_at)
             VALUES {}
             ON CONFLICT (tenant_id, {owner_col}, source_id) DO UPDATE SET {UPDATE_FIELDS}",
            value_rows(backend, chunk.len(), 19)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (owner, source_id, fields) in chunk {
            q = q.bind(tenant_id).bind(*owner).bind(*source_id);
            for v in fields.values() {
                q = q.bind(v);
            }
            q = q.bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The rows of `contacts` to write against the `existing` ones, each once (PostgreSQL
/// refuses a statement that upserts one row twice), counted into `counts`; a contact listed
/// twice counts once more only when it changed. `existing` ends as the book will be.
pub(super) fn plan_upserts<'a>(
    existing: &mut HashMap<String, ContactFields>,
    contacts: &'a [(String, ContactFields)],
    counts: &mut UpsertCounts,
) -> Vec<(&'a str, &'a ContactFields)> {
    let mut writes: Vec<(&str, &ContactFields)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (source_id, fields) in contacts {
        match existing.get(source_id) {
            Some(old) if old == fields => {
                counts.unchanged += 1;
                continue;
            }
            Some(_) => counts.updated += 1,
            None => counts.created += 1,
        }
        existing.insert(source_id.clone(), fields.clone());
        match position.get(source_id.as_str()) {
            Some(&i) => writes[i].1 = fields,
            None => {
                position.insert(source_id, writes.len());
                writes.push((source_id, fields));
            }
        }
    }
    writes
}

impl ContactFields {
    pub(super) fn values(&self) -> [&str; 15] {
        [
            &self.name,
            &self.email,
            &self.company,
            &self.title,
            &self.business,
            &self.business2,
            &self.mobile_phone,
            &self.mobile_phone2,
            &self.home_phone,
            &self.home_phone2,
            &self.other,
            &self.business_fax,
            &self.home_fax,
            &self.address,
            &self.notes,
        ]
    }

    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ContactFields {
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            company: row.try_get("company")?,
            title: row.try_get("title")?,
            business: row.try_get("business")?,
            business2: row.try_get("business2")?,
            mobile_phone: row.try_get("mobile_phone")?,
            mobile_phone2: row.try_get("mobile_phone2")?,
            home_phone: row.try_get("home_phone")?,
            home_phone2: row.try_get("home_phone2")?,
            other: row.try_get("other")?,
            business_fax: row.try_get("business_fax")?,
            home_fax: row.try_get("home_fax")?,
            address: row.try_get("address")?,
            notes: row.try_get("notes")?,
        })
    }
}

/// Which book a contact belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactBook {
    /// The personal contacts of a PBX user (its id).
    Personal(String),
    /// The company contacts from one shared mailbox (its object id).
    Company(String),
}

impl ContactBook {
    pub(super) fn table(&self) -> &'static str {
        match self {
            ContactBook::Personal(_) => "personal_contacts",
            ContactBook::Company(_) => "company_contacts",
        }
    }

    pub(super) fn owner_column(&self) -> &'static str {
        match self {
            ContactBook::Personal(_) => "owner_pbx_user_id",
            ContactBook::Company(_) => "mailbox",
        }
    }

    /// The PBX user id or the mailbox id.
    pub fn owner(&self) -> &str {
        match self {
            ContactBook::Personal(o) | ContactBook::Company(o) => o,
        }
    }

    /// `personal` or `company`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContactBook::Personal(_) => "personal",
            ContactBook::Company(_) => "company",
        }
    }
}

/// A stored contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredContact {
    /// `personal` or `company`.
    pub kind: &'static str,
    /// The owning PBX user id (personal) or shared mailbox id (company).
    pub owner: String,
    pub source_id: String,
    #[serde(flatten)]
    pub fields: ContactFields,
    pub updated_at: i64,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

// Dynamic SQL here only splices the static table, column and placeholder names below;
// every value is bound.

impl Store {
    /// Creates or replaces contacts of `book` in one transaction; rows already equal are
    /// left alone.
    pub async fn upsert_contacts(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
        contacts: &[(String, ContactFields)],
    ) -> Result<UpsertCounts, StoreError> {
        let mut counts = UpsertCounts::default();
        if contacts.is_empty() {
            return Ok(counts);
        }
        let mut existing = self.stored_fields(tenant_id, book, contacts).await?;
        let writes = plan_upserts(&mut existing, contacts, &mut counts);
        if writes.is_empty() {
            return Ok(counts);
        }
        let rows: Vec<ContactRow> = (writes.into_iter())
            .map(|(id, fields)| (book.owner(), id, fields))
            .collect();
        let mut tx = self.pool().begin().await?;
        write_rows(&mut tx, self.backend, tenant_id, book, &rows).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The stored fields of those of `contacts` already in `book`. Read before the write
    /// transaction: on SQLite a transaction that reads and then writes cannot wait for
    /// another writer (SQLITE_BUSY), one that only writes can.
    async fn stored_fields(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
        contacts: &[(String, ContactFields)],
    ) -> Result<HashMap<String, ContactFields>, StoreError> {
        let (table, owner_col) = (book.table(), book.owner_column());
        let head = format!(
            "SELECT source_id, {FIELD_COLUMNS} FROM {table}
             WHERE tenant_id = $1 AND {owner_col} = $2 AND source_id"
        );
        let ids: Vec<String> = contacts.iter().map(|(id, _)| id.clone()).collect();
        let rows = (self.rows_with_ids(&head, &[tenant_id.as_str(), book.owner()], &ids)).await?;
        let fields = |r: &AnyRow| Ok((r.try_get("source_id")?, ContactFields::from_row(r)?));
        rows.iter().map(fields).collect()
    }

    /// Removes contacts of `book` by Graph id; how many were there.
    pub async fn delete_contacts(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
        source_ids: &[String],
    ) -> Result<usize, StoreError> {
        if source_ids.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut tx = self.pool().begin().await?;
        for chunk in source_ids.chunks(IDS_PER_STATEMENT) {
            let placeholders = placeholders(3, chunk.len());
            let sql = format!(
                "DELETE FROM {} WHERE tenant_id = $1 AND {} = $2 AND source_id IN ({placeholders})",
                book.table(),
                book.owner_column()
            );
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(tenant_id)
                .bind(book.owner());
            for id in chunk {
                q = q.bind(id);
            }
            removed += q.execute(&mut *tx).await?.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The Graph ids of every contact of `book`.
    pub async fn contact_source_ids(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT source_id FROM {} WHERE tenant_id = $1 AND {} = $2",
            book.table(),
            book.owner_column()
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(tenant_id)
            .bind(book.owner())
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("source_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Removes every contact of `book` whose Graph id is not in `keep` (the end of a full
    /// compare); how many were removed.
    pub async fn delete_contacts_except(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
        keep: &HashSet<String>,
    ) -> Result<usize, StoreError> {
        let gone: Vec<String> = self
            .contact_source_ids(tenant_id, book)
            .await?
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        self.delete_contacts(tenant_id, book, &gone).await
    }

    /// The owners (PBX user ids, or mailbox ids for company contacts) that have contacts.
    pub async fn contact_owners(
        &self,
        tenant_id: &TenantId,
        company: bool,
    ) -> Result<Vec<String>, StoreError> {
        let book = if company {
            ContactBook::Company(String::new())
        } else {
            ContactBook::Personal(String::new())
        };
        let col = book.owner_column();
        let sql = format!(
            "SELECT DISTINCT {col} AS owner FROM {} WHERE tenant_id = $1",
            book.table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("owner"))
            .collect::<Result<_, _>>()?)
    }

    /// Removes a whole book; how many contacts it had.
    pub async fn delete_contact_book(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
    ) -> Result<usize, StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND {} = $2",
            book.table(),
            book.owner_column()
        );
        let done = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(tenant_id)
            .bind(book.owner())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() as usize)
    }

    /// Personal contacts of a PBX user, by name, optionally searched with `q`.
    pub async fn personal_contacts(
        &self,
        tenant_id: &TenantId,
        owner_pbx_user_id: &str,
        q: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredContact>, StoreError> {
        self.list_contacts(
            tenant_id,
            &ContactBook::Personal(owner_pbx_user_id.to_string()),
            q,
            limit,
        )
        .await
    }

    /// The tenant's company contacts (all shared mailboxes), by name, optionally searched.
    pub async fn company_contacts(
        &self,
        tenant_id: &TenantId,
        q: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredContact>, StoreError> {
        self.list_contacts(tenant_id, &ContactBook::Company(String::new()), q, limit)
            .await
    }

    /// Personal books filter by owner; the company book of an empty owner lists all mailboxes.
    async fn list_contacts(
        &self,
        tenant_id: &TenantId,
        book: &ContactBook,
        q: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredContact>, StoreError> {
        let col = book.owner_column();
        let mut sql = format!(
            "SELECT {col} AS owner, source_id, {FIELD_COLUMNS}, updated_at FROM {} WHERE tenant_id = $1",
            book.table()
        );
        let by_owner = !book.owner().is_empty() || matches!(book, ContactBook::Personal(_));
        let mut next = 2;
        if by_owner {
            sql.push_str(&format!(" AND {col} = ${next}"));
            next += 1;
        }
        let pattern = q
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| format!("%{}%", escape_like(&q.to_lowercase())));
        if pattern.is_some() {
            let p = format!("${next}");
            let cond = [
                "name",
                "email",
                "company",
                "business",
                "business2",
                "mobile_phone",
                "mobile_phone2",
                "home_phone",
                "home_phone2",
                "other",
            ]
            .iter()
            .map(|c| format!("LOWER({c}) LIKE {p} ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" OR ");
            sql.push_str(&format!(" AND ({cond})"));
            next += 1;
        }
        sql.push_str(&format!(" ORDER BY name, source_id LIMIT ${next}"));
        let mut query = sqlx::query(AssertSqlSafe(sql.as_str())).bind(tenant_id);
        if by_owner {
            query = query.bind(book.owner());
        }
        if let Some(p) = &pattern {
            query = query.bind(p.clone());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query.bind(limit).fetch_all(self.pool()).await?;
        let kind = book.kind();
        rows.iter()
            .map(|r| {
                Ok(StoredContact {
                    kind,
                    owner: r.try_get("owner")?,
                    source_id: r.try_get("source_id")?,
                    fields: ContactFields::from_row(r)?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// Escapes `LIKE` wildcards (with `\` as the escape character).
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding tenant `t`.
    async fn with_tenant_t(db: &crate::store::test_db::TestDb) -> Store {
        let store = db.open(2).await.unwrap();
        crate::store::test_db::add_tenant(&store, "t").await;
        store
    }

    /// More contacts than one statement holds, one of them listed twice with a change:
    /// every row lands once, the later listing wins, and it counts as an update.
    #[tokio::test]
    async fn a_large_page_is_written_in_several_statements_each_row_once() {
        let db = crate::store::test_db::TestDb::new().await;
        let store = with_tenant_t(&db).await;
        let book = ContactBook::Company("m1".into());
        let contact = |i: usize, phone: &str| {
            let fields = ContactFields {
                name: format!("Contact {i:03}"),
                business: phone.into(),
                notes: "it's 100% \"quoted\"".into(),
                ..Default::default()
            };
            (format!("c{i}"), fields)
        };
        let mut page: Vec<_> = (0..2 * CONTACTS_PER_STATEMENT + 50)
            .map(|i| contact(i, "+1 555 0100"))
            .collect();
        page.push(contact(7, "+1 555 0177"));
        let counts = store
            .upsert_contacts(&TenantId::from_static("t"), &book, &page)
            .await
            .unwrap();
        assert_eq!(
            (counts.created, counts.updated, counts.unchanged),
            (250, 1, 0)
        );
        let stored = store
            .company_contacts(&TenantId::from_static("t"), None, 1000)
            .await
            .unwrap();
        assert_eq!(stored.len(), 250);
        let seventh = stored.iter().find(|c| c.source_id == "c7").unwrap();
        assert_eq!(
            seventh.fields.business, "+1 555 0177",
            "the later listing wins"
        );
        assert_eq!(seventh.fields.notes, "it's 100% \"quoted\"");
        let again = store
            .upsert_contacts(&TenantId::from_static("t"), &book, &page[..10])
            .await
            .unwrap();
        assert_eq!((again.created, again.updated, again.unchanged), (0, 1, 9));
    }

    #[tokio::test]
    async fn upsert_compare_delete_and_search() {
        let db = crate::store::test_db::TestDb::new().await;
        let store = with_tenant_t(&db).await;
        let book = ContactBook::Personal("u1".into());
        let c = |name: &str, phone: &str| ContactFields {
            name: name.into(),
            mobile_phone: phone.into(),
            ..Default::default()
        };
        let first = store
            .upsert_contacts(
                &TenantId::from_static("t"),
                &book,
                &[
                    ("a".into(), c("Ada 100%", "+1 555")),
                    ("b".into(), c("Bob", "+44 20")),
                ],
            )
            .await
            .unwrap();
        assert_eq!((first.created, first.updated), (2, 0));
        let again = store
            .upsert_contacts(
                &TenantId::from_static("t"),
                &book,
                &[
                    ("a".into(), c("Ada 100%", "+1 555")),
                    ("b".into(), c("Bobby", "+44 20")),
                ],
            )
            .await
            .unwrap();
        assert_eq!((again.created, again.updated, again.unchanged), (0, 1, 1));
        let found = store
            .personal_contacts(&TenantId::from_static("t"), "u1", Some("BOB"), 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].fields.name, "Bobby");
        assert_eq!(
            store
                .personal_contacts(&TenantId::from_static("t"), "u1", Some("0%"), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .personal_contacts(&TenantId::from_static("t"), "u1", Some("x%"), 10)
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            store
                .personal_contacts(&TenantId::from_static("t"), "u2", None, 10)
                .await
                .unwrap()
                .len(),
            0
        );
        let keep = HashSet::from(["a".to_string()]);
        assert_eq!(
            store
                .delete_contacts_except(&TenantId::from_static("t"), &book, &keep)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .delete_contacts(&TenantId::from_static("t"), &book, &["a".into()])
                .await
                .unwrap(),
            1
        );
        assert!(
            store
                .personal_contacts(&TenantId::from_static("t"), "u1", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let company = ContactBook::Company("m1".into());
        store
            .upsert_contacts(
                &TenantId::from_static("t"),
                &company,
                &[("x".into(), c("Xena", ""))],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .company_contacts(&TenantId::from_static("t"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .contact_owners(&TenantId::from_static("t"), true)
                .await
                .unwrap(),
            vec!["m1".to_string()]
        );
    }
}
