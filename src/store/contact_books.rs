//! Many small contact books written at once. A first sync of a large tenant is tens of
//! thousands of mailboxes with a few dozen contacts each, every one of them answered by a
//! single page; written one by one that is some nine store round trips per mailbox (the
//! cursor, the stored rows, the upsert transaction, the full-compare read and delete, the
//! new cursor). [`Store::write_contact_books`] takes a group of such books (the twenty
//! mailboxes of one Graph `$batch`) and reads what it needs in a statement per table, then
//! writes every book's rows, removals and delta cursor in one transaction: a book's cursor
//! is committed with its contacts, never before them.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::contacts::{ContactRow, FIELD_COLUMNS, UpsertCounts, plan_upserts, write_rows};
use super::focused::{IDS_PER_STATEMENT, placeholders};
use super::{Backend, ContactBook, ContactFields, Store, StoreError, SyncCursor, now_epoch};
use crate::ids::TenantId;

/// One book's complete change: what a round of its mailbox listed.
#[derive(Debug, Clone)]
pub struct BookWrite {
    pub book: ContactBook,
    /// Contacts to create or replace (Graph id, fields), in listing order.
    pub upserts: Vec<(String, ContactFields)>,
    /// Graph ids Graph reported removed.
    pub removed: Vec<String>,
    /// The round listed every contact: stored ones it did not list go.
    pub full: bool,
    /// The delta cursor to save with the book (`sync_state.kind`, deltaLink, fingerprint).
    pub cursor: Option<(String, String, String)>,
}

/// What writing one book did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookCounts {
    pub upserts: UpsertCounts,
    pub removed: usize,
}

/// A book's rows to write and Graph ids to delete, worked out before the transaction.
struct BookPlan<'a> {
    book: &'a ContactBook,
    rows: Vec<(&'a str, &'a ContactFields)>,
    deletes: Vec<String>,
}

// Dynamic SQL here only splices the static table, column and placeholder names; every value
// is bound.
impl Store {
    /// The delta cursors of `kinds`, by kind (kinds without one absent).
    pub async fn sync_cursors(
        &self,
        tenant_id: &TenantId,
        kinds: &[&str],
    ) -> Result<HashMap<String, SyncCursor>, StoreError> {
        let head = "SELECT kind, delta_link, fingerprint, updated_at FROM sync_state
                    WHERE tenant_id = $1 AND kind";
        let rows = self
            .rows_with_ids(head, &[tenant_id.as_str()], kinds)
            .await?;
        let cursor = |r: &AnyRow| -> Result<(String, SyncCursor), sqlx::Error> {
            let c = SyncCursor {
                delta_link: r.try_get("delta_link")?,
                fingerprint: r.try_get("fingerprint")?,
                updated_at: r.try_get("updated_at")?,
            };
            Ok((r.try_get("kind")?, c))
        };
        Ok(rows.iter().map(cursor).collect::<Result<_, _>>()?)
    }

    /// Writes `books` (each book at most once) in one transaction: their contacts, their
    /// removals, and, committed with them, their cursors. Counts come back in `books`'
    /// order and mean what [`Store::upsert_contacts`] and [`Store::delete_contacts`] count.
    pub async fn write_contact_books(
        &self,
        tenant_id: &TenantId,
        books: &[BookWrite],
    ) -> Result<Vec<BookCounts>, StoreError> {
        let mut stored = self.stored_books(tenant_id, books).await?;
        let mut counts = vec![BookCounts::default(); books.len()];
        let mut plans = Vec::with_capacity(books.len());
        for (write, count) in books.iter().zip(&mut counts) {
            let existing = stored.remove(&write.book).unwrap_or_default();
            plans.push(plan_book(write, existing, &mut count.upserts));
        }
        let mut tx = self.pool().begin().await?;
        insert_rows(&mut tx, self.backend, tenant_id, &plans).await?;
        for (plan, count) in plans.iter().zip(&mut counts) {
            count.removed = delete_rows(&mut tx, tenant_id, plan).await?;
        }
        save_cursors(&mut tx, tenant_id, books).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The stored contacts `books` need to be compared with: every contact of a book listed
    /// in full, the listed and removed ones of the others. Read before the write
    /// transaction (see [`Store::upsert_contacts`]).
    async fn stored_books(
        &self,
        tenant_id: &TenantId,
        books: &[BookWrite],
    ) -> Result<HashMap<ContactBook, HashMap<String, ContactFields>>, StoreError> {
        let mut out: HashMap<ContactBook, HashMap<String, ContactFields>> = HashMap::new();
        for sample in [
            ContactBook::Personal(String::new()),
            ContactBook::Company(String::new()),
        ] {
            let of_table = |full: bool| -> Vec<&BookWrite> {
                (books.iter())
                    .filter(|b| b.book.table() == sample.table() && b.full == full)
                    .collect()
            };
            let full = of_table(true);
            let partial = of_table(false);
            let mut rows = self.whole_books(tenant_id, &sample, &full).await?;
            rows.extend(self.listed_rows(tenant_id, &sample, &partial).await?);
            for row in &rows {
                let owner: String = row.try_get("owner")?;
                let book = match sample {
                    ContactBook::Personal(_) => ContactBook::Personal(owner),
                    ContactBook::Company(_) => ContactBook::Company(owner),
                };
                let fields = ContactFields::from_row(row)?;
                (out.entry(book).or_default()).insert(row.try_get("source_id")?, fields);
            }
        }
        Ok(out)
    }

    /// Every stored contact of `books` (all of `sample`'s table).
    async fn whole_books(
        &self,
        tenant_id: &TenantId,
        sample: &ContactBook,
        books: &[&BookWrite],
    ) -> Result<Vec<AnyRow>, StoreError> {
        let (table, owner_col) = (sample.table(), sample.owner_column());
        let head = format!(
            "SELECT {owner_col} AS owner, source_id, {FIELD_COLUMNS} FROM {table}
             WHERE tenant_id = $1 AND {owner_col}"
        );
        let owners: Vec<&str> = books.iter().map(|b| b.book.owner()).collect();
        self.rows_with_ids(&head, &[tenant_id.as_str()], &owners)
            .await
    }

    /// The stored rows of the contacts `books` list or remove (all of `sample`'s table):
    /// owners and Graph ids in two `IN` lists, which the primary key answers; a row of
    /// another listed book that happens to match is filtered out by the caller's book key.
    async fn listed_rows(
        &self,
        tenant_id: &TenantId,
        sample: &ContactBook,
        books: &[&BookWrite],
    ) -> Result<Vec<AnyRow>, StoreError> {
        let (table, owner_col) = (sample.table(), sample.owner_column());
        let owners: Vec<&str> = books.iter().map(|b| b.book.owner()).collect();
        let ids: Vec<&str> = (books.iter())
            .flat_map(|b| b.upserts.iter().map(|(id, _)| id).chain(&b.removed))
            .map(String::as_str)
            .collect();
        let mut rows = Vec::new();
        for owners in owners.chunks(IDS_PER_STATEMENT) {
            for ids in ids.chunks(IDS_PER_STATEMENT) {
                let sql = format!(
                    "SELECT {owner_col} AS owner, source_id, {FIELD_COLUMNS} FROM {table}
                     WHERE tenant_id = $1 AND {owner_col} IN ({}) AND source_id IN ({})",
                    placeholders(2, owners.len()),
                    placeholders(2 + owners.len(), ids.len()),
                );
                // Planned at each call, as in `rows_with_ids`.
                let mut q = sqlx::query(AssertSqlSafe(sql))
                    .persistent(false)
                    .bind(tenant_id);
                for value in owners.iter().chain(ids) {
                    q = q.bind(*value);
                }
                rows.extend(q.fetch_all(self.pool()).await?);
            }
        }
        Ok(rows)
    }
}

/// What one book writes and deletes, as a round read page by page would: listed rows
/// upserted, removed ones deleted, and after a full listing every stored row not listed.
fn plan_book<'a>(
    write: &'a BookWrite,
    mut existing: HashMap<String, ContactFields>,
    counts: &mut UpsertCounts,
) -> BookPlan<'a> {
    let stored_before: Vec<String> = existing.keys().cloned().collect();
    let rows = plan_upserts(&mut existing, &write.upserts, counts);
    let removed: HashSet<&str> = write.removed.iter().map(String::as_str).collect();
    let mut deletes: Vec<String> = write.removed.clone();
    if write.full {
        let listed: HashSet<&str> = (write.upserts.iter())
            .map(|(id, _)| id.as_str())
            .filter(|id| !removed.contains(id))
            .collect();
        deletes.extend(
            stored_before
                .into_iter()
                .filter(|id| !listed.contains(id.as_str()) && !removed.contains(id.as_str())),
        );
    }
    deletes.sort();
    deletes.dedup();
    BookPlan {
        book: &write.book,
        rows,
        deletes,
    }
}

/// Every book's rows, in statements per table.
async fn insert_rows(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    tenant_id: &TenantId,
    plans: &[BookPlan<'_>],
) -> Result<(), StoreError> {
    for sample in [
        ContactBook::Personal(String::new()),
        ContactBook::Company(String::new()),
    ] {
        let rows: Vec<ContactRow> = (plans.iter())
            .filter(|p| p.book.table() == sample.table())
            .flat_map(|p| p.rows.iter().map(|(id, f)| (p.book.owner(), *id, *f)))
            .collect();
        write_rows(tx, backend, tenant_id, &sample, &rows).await?;
    }
    Ok(())
}

/// The book's deletions; how many rows were there.
async fn delete_rows(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &TenantId,
    plan: &BookPlan<'_>,
) -> Result<usize, StoreError> {
    let (table, owner_col) = (plan.book.table(), plan.book.owner_column());
    let mut removed = 0;
    for chunk in plan.deletes.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND {owner_col} = $2 AND source_id IN ({})",
            placeholders(3, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(plan.book.owner());
        for id in chunk {
            q = q.bind(id);
        }
        removed += q.execute(&mut **tx).await?.rows_affected() as usize;
    }
    Ok(removed)
}

/// The books' delta cursors, in one statement per [`IDS_PER_STATEMENT`] books.
async fn save_cursors(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &TenantId,
    books: &[BookWrite],
) -> Result<(), StoreError> {
    let cursors: Vec<&(String, String, String)> =
        books.iter().filter_map(|b| b.cursor.as_ref()).collect();
    for chunk in cursors.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, {}, $2)", placeholders(3 + i * 3, 3)))
            .collect();
        let sql = format!(
            "INSERT INTO sync_state (tenant_id, kind, delta_link, fingerprint, updated_at)
             VALUES {}
             ON CONFLICT (tenant_id, kind) DO UPDATE SET delta_link = excluded.delta_link,
             fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
            rows.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(now_epoch());
        for (kind, link, fingerprint) in chunk {
            q = q
                .bind(kind.as_str())
                .bind(link.as_str())
                .bind(fingerprint.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{TestDb, add_tenant};

    fn contact(i: u32, phone: &str) -> (String, ContactFields) {
        let fields = ContactFields {
            name: format!("Contact {i}"),
            business: phone.into(),
            ..Default::default()
        };
        (format!("c{i}"), fields)
    }

    fn book_write(book: ContactBook, upserts: Vec<(String, ContactFields)>) -> BookWrite {
        BookWrite {
            book,
            upserts,
            removed: Vec::new(),
            full: false,
            cursor: None,
        }
    }

    /// Three books as a round leaves them: one listed in full (an update, a creation, an
    /// unchanged row, a stored row no longer listed), one delta page with removals (one of
    /// them never stored), one listing a contact twice.
    fn group() -> Vec<BookWrite> {
        let cursor = |kind: &str, link: &str| Some((kind.into(), link.into(), "fp".into()));
        let mut full = book_write(
            ContactBook::Personal("u1".into()),
            vec![contact(1, "new"), contact(2, "x"), contact(3, "x")],
        );
        full.full = true;
        full.cursor = cursor("contacts:u1", "link-1");
        let mut delta = book_write(ContactBook::Company("m1".into()), vec![contact(4, "x")]);
        delta.removed = vec!["c2".into(), "c404".into()];
        delta.cursor = cursor("contacts:shared:m1", "link-2");
        let twice = book_write(
            ContactBook::Personal("u2".into()),
            vec![contact(1, "x"), contact(1, "y")],
        );
        vec![full, delta, twice]
    }

    /// The same writes the page-by-page way: upsert, delete the removed, drop the unlisted
    /// of a full listing, save the cursor.
    async fn page_by_page(store: &Store, t: &TenantId, writes: &[BookWrite]) -> Vec<BookCounts> {
        let mut out = Vec::new();
        for w in writes {
            let upserts = store.upsert_contacts(t, &w.book, &w.upserts).await.unwrap();
            let mut removed = store.delete_contacts(t, &w.book, &w.removed).await.unwrap();
            if w.full {
                let keep: HashSet<String> = w.upserts.iter().map(|(id, _)| id.clone()).collect();
                removed += store
                    .delete_contacts_except(t, &w.book, &keep)
                    .await
                    .unwrap();
            }
            if let Some((kind, link, fp)) = &w.cursor {
                store.save_sync_cursor(t, kind, link, fp).await.unwrap();
            }
            out.push(BookCounts { upserts, removed });
        }
        out
    }

    async fn contents(store: &Store, t: &TenantId) -> Vec<(String, String, ContactFields)> {
        let mut all = store.company_contacts(t, None, 1000).await.unwrap();
        for owner in ["u1", "u2"] {
            all.extend(store.personal_contacts(t, owner, None, 1000).await.unwrap());
        }
        let mut rows: Vec<_> = (all.into_iter())
            .map(|c| (c.owner, c.source_id, c.fields))
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows
    }

    #[tokio::test]
    async fn a_group_write_ends_where_page_by_page_writes_end() {
        let db = TestDb::new().await;
        let store = db.open(2).await.unwrap();
        let (grouped, single) = (add_tenant(&store, "a").await, add_tenant(&store, "b").await);
        for t in [&grouped, &single] {
            let before = [contact(1, "old"), contact(2, "x"), contact(9, "x")];
            for owner in ["u1", "u2"] {
                let book = ContactBook::Personal(owner.into());
                store.upsert_contacts(t, &book, &before).await.unwrap();
            }
            let company = ContactBook::Company("m1".into());
            store.upsert_contacts(t, &company, &before).await.unwrap();
        }
        let writes = group();
        let counts = store.write_contact_books(&grouped, &writes).await.unwrap();
        let expected = |created, updated, unchanged, removed| BookCounts {
            upserts: UpsertCounts {
                created,
                updated,
                unchanged,
            },
            removed,
        };
        assert_eq!(
            counts,
            vec![
                expected(1, 1, 1, 1),
                expected(1, 0, 0, 1),
                expected(0, 2, 0, 0)
            ]
        );
        assert_eq!(counts, page_by_page(&store, &single, &writes).await);
        assert_eq!(
            contents(&store, &grouped).await,
            contents(&store, &single).await
        );
        let kinds = ["contacts:u1", "contacts:shared:m1"];
        let links = |c: HashMap<String, SyncCursor>| -> Vec<(String, String)> {
            let mut v: Vec<_> = c.into_iter().map(|(k, c)| (k, c.delta_link)).collect();
            v.sort();
            v
        };
        let saved = links(store.sync_cursors(&grouped, &kinds).await.unwrap());
        assert_eq!(
            saved,
            vec![
                ("contacts:shared:m1".to_string(), "link-2".to_string()),
                ("contacts:u1".to_string(), "link-1".to_string())
            ]
        );
        assert_eq!(
            saved,
            links(store.sync_cursors(&single, &kinds).await.unwrap())
        );
    }
}
