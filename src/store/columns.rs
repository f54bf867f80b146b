//! Bind lists of column runs that several statements share: a PBX user's profile, and a
//! directory entry's row. The statements keep their own SQL (their conflict rules differ);
//! the values go in one order, written once, so a column added to one list cannot be
//! forgotten in another.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use super::{DirectoryUser, PbxProfile};

type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// Binds the nine profile columns: `display_name, first_name, last_name, email,
/// mobile_phone, work_phone, title, department, office`.
pub(super) fn bind_profile<'q>(q: AnyQuery<'q>, p: &'q PbxProfile) -> AnyQuery<'q> {
    q.bind(&p.display_name)
        .bind(&p.first_name)
        .bind(&p.last_name)
        .bind(&p.email)
        .bind(&p.mobile_phone)
        .bind(&p.work_phone)
        .bind(&p.title)
        .bind(&p.department)
        .bind(&p.office)
}

/// Binds a `ms365_users` row: `tenant_id, oid, upn, pbx_user_id, extension, display_name,
/// email, role, enabled, source, updated_at`.
pub(super) fn bind_directory_user<'q>(
    q: AnyQuery<'q>,
    u: &'q DirectoryUser,
    now: i64,
) -> AnyQuery<'q> {
    q.bind(&u.tenant_id)
        .bind(&u.oid)
        .bind(&u.upn)
        .bind(&u.pbx_user_id)
        .bind(&u.extension)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(u.role.as_str())
        .bind(i64::from(u.enabled))
        .bind(&u.source)
        .bind(now)
}
