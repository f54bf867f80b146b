//! The Graph calls the sync makes, with documented paths and limits: first URLs of the
//! user, group-member and contact collections and delta rounds (`$select` of exactly the
//! fields the model reads, `$top` at Graph's maximum), and the photo calls. Photo and
//! contact requests are Outlook (Exchange) resources and hold a per-mailbox slot.

use bytes::Bytes;
use percent_encoding::AsciiSet;
use reqwest::header::CONTENT_TYPE;

use super::client::{Call, GraphClient};
use super::error::GraphError;
use super::model::{CONTACT_FIELDS, PhotoMeta};
use crate::encoding;

/// Well-known name of a mailbox's default Contacts folder, usable where the documented
/// contact delta path wants a folder id. The folder's real id is also on every contact of
/// `/users/{id}/contacts` as `parentFolderId`.
pub const DEFAULT_CONTACTS_FOLDER: &str = "contacts";
/// `$top` maximum of `/users` and directory member lists.
pub const MAX_DIRECTORY_TOP: u16 = 999;
/// `$top` maximum of `/users/{id}/contacts`.
pub const MAX_CONTACTS_TOP: u16 = 1000;
/// The `Prefer` header of every contact delta request: 200 contacts a page. Without it
/// Graph pages contact deltas by 10, so a first sync of mailboxes with 20 contacts takes
/// two requests each; 200 is the largest page Graph serves for contacts (larger asks are
/// capped to it), and Graph wants the preference on every request of the round.
pub const CONTACTS_DELTA_PREFERENCE: &str = "odata.maxpagesize=200";
/// Accept of `/photo/$value`: the image itself, or Graph's JSON error.
const PHOTO_ACCEPT: &str = "image/*, application/json";

impl GraphClient {
    /// First page of `/users` (`$top` clamped to 1..=999).
    pub fn users_first_url(&self, select: &[&str], top: u16) -> String {
        let top = top.clamp(1, MAX_DIRECTORY_TOP);
        format!(
            "{}/users?{}$top={top}",
            self.graph_base(),
            select_param(select)
        )
    }

    /// First request of a `/users/delta` round (later rounds start from the deltaLink).
    pub fn users_delta_url(&self, select: &[&str]) -> String {
        with_query(
            format!("{}/users/delta", self.graph_base()),
            &select_param(select),
        )
    }

    /// Users in a group, nested groups resolved
    /// (`/groups/{id}/transitiveMembers/microsoft.graph.user`).
    pub fn group_members_url(&self, group_id: &str, select: &[&str]) -> String {
        format!(
            "{}/groups/{}/transitiveMembers/microsoft.graph.user?{}$top={MAX_DIRECTORY_TOP}",
            self.graph_base(),
            path_segment(group_id),
            select_param(select)
        )
    }

    /// First page of a mailbox's default Contacts folder (`$top` clamped to 1..=1000).
    pub fn contacts_url(&self, mailbox: &str, top: u16) -> String {
        let top = top.clamp(1, MAX_CONTACTS_TOP);
        format!(
            "{}/users/{}/contacts?{}$top={top}",
            self.graph_base(),
            path_segment(mailbox),
            select_param(CONTACT_FIELDS)
        )
    }

    /// First request of a contacts delta round over the default Contacts folder, or
    /// `None` in clouds without contacts delta (21Vianet): there the sync lists
    /// [`GraphClient::contacts_url`] in full.
    pub fn contacts_delta_url(&self, mailbox: &str) -> Option<String> {
        self.contact_folder_delta_url(mailbox, DEFAULT_CONTACTS_FOLDER)
    }

    /// `/users/{id}/contactFolders/{folder}/contacts/delta`, the documented contact delta.
    pub fn contact_folder_delta_url(&self, mailbox: &str, folder_id: &str) -> Option<String> {
        if !self.cloud().has_contacts_delta() {
            return None;
        }
        let path = format!(
            "{}/users/{}/contactFolders/{}/contacts/delta",
            self.graph_base(),
            path_segment(mailbox),
            path_segment(folder_id)
        );
        Some(with_query(path, &select_param(CONTACT_FIELDS)))
    }

    /// The photo's metadata (`mediaEtag` tells whether it changed), `None` without photo.
    pub async fn photo_meta(&self, mailbox: &str) -> Result<Option<PhotoMeta>, GraphError> {
        let _slot = self.mailboxes().acquire(mailbox).await;
        let path = format!("/users/{}/photo", path_segment(mailbox));
        not_found_as_none(self.get_json(&path, "photo").await)
    }

    /// The photo and its content type, `None` without photo. A photo larger than
    /// `max_bytes` is an error, found out without reading more than `max_bytes`.
    pub async fn photo_bytes(
        &self,
        mailbox: &str,
        max_bytes: usize,
    ) -> Result<Option<(Bytes, String)>, GraphError> {
        let _slot = self.mailboxes().acquire(mailbox).await;
        let url = self.resolve(&format!("/users/{}/photo/$value", path_segment(mailbox)))?;
        let call = Call {
            accept: PHOTO_ACCEPT,
            max_body: max_bytes,
            ..Call::get(&url, "photo")
        };
        let reply = match not_found_as_none(self.execute(&call).await)? {
            Some(reply) => reply,
            None => return Ok(None),
        };
        let content_type = reply
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("image/jpeg")
            .to_string();
        Ok(Some((reply.body, content_type)))
    }
}

fn not_found_as_none<T>(result: Result<T, GraphError>) -> Result<Option<T>, GraphError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `$select=a,b&` (empty when nothing is selected, so Graph's default set comes back).
fn select_param(select: &[&str]) -> String {
    if select.is_empty() {
        return String::new();
    }
    let fields: Vec<String> = select.iter().map(|f| path_segment(f)).collect();
    format!("$select={}&", fields.join(","))
}

/// `url?query` without the builders' trailing `&`, or `url` alone.
fn with_query(url: String, query: &str) -> String {
    match query.trim_end_matches('&') {
        "" => url,
        query => format!("{url}?{query}"),
    }
}

/// Percent-encodes one path segment. Ids are GUIDs, but user principal names can carry
/// `#` (guests: `x_y.com#EXT#@tenant`), `'`, `/` or `?`, which would change the URL.
pub fn path_segment(s: &str) -> String {
    const SEGMENT: &AsciiSet = &encoding::NOT_UNRESERVED.remove(b'@');
    encoding::percent_encode(s, SEGMENT)
}

/// Whether `url` (absolute, or relative to the version) is a request of a contact delta
/// round: the first one, a nextLink or a deltaLink keep the delta function in the path,
/// short (`/contacts/delta`) or qualified (`/contacts/microsoft.graph.delta()`).
pub fn is_contacts_delta(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit_once("/contacts/").is_some_and(|(_, function)| {
        let function = function.strip_suffix("()").unwrap_or(function);
        function == "delta" || function == "microsoft.graph.delta"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::support::client_for;

    #[test]
    fn contact_delta_requests_are_recognised_in_every_link_form() {
        let base = "https://graph.microsoft.com/v1.0/users/a%40b/contactFolders/contacts";
        for url in [
            format!("{base}/contacts/delta?$select=displayName"),
            format!("{base}/contacts/delta?$skiptoken=x"),
            format!("{base}/contacts/microsoft.graph.delta()?$deltatoken=y"),
            "/users/u1/contactFolders/contacts/contacts/delta()".to_string(),
        ] {
            assert!(is_contacts_delta(&url), "{url}");
        }
        for url in [
            format!("{base}/contacts?$top=1000"),
            "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=z".to_string(),
            format!("{base}/contacts/AAMk-delta"),
        ] {
            assert!(!is_contacts_delta(&url), "{url}");
        }
    }

    #[tokio::test]
    async fn collection_and_delta_urls() {
        let c = client_for(
            "https://graph.microsoft.com",
            crate::entra::NationalCloud::Global,
        );
        assert_eq!(
            c.users_first_url(&["id", "displayName"], 5000),
            "https://graph.microsoft.com/v1.0/users?$select=id,displayName&$top=999"
        );
        assert_eq!(
            c.users_delta_url(&["id", "mail"]),
            "https://graph.microsoft.com/v1.0/users/delta?$select=id,mail"
        );
        assert_eq!(
            c.users_delta_url(&[]),
            "https://graph.microsoft.com/v1.0/users/delta"
        );
        assert_eq!(
            c.group_members_url("g 1", &["id"]),
            "https://graph.microsoft.com/v1.0/groups/g%201/transitiveMembers/microsoft.graph.user?$select=id&$top=999"
        );
        let contacts = c.contacts_url("a_b.com#EXT#@t.onmicrosoft.com", 0);
        assert!(contacts.starts_with(
            "https://graph.microsoft.com/v1.0/users/a_b.com%23EXT%23@t.onmicrosoft.com/contacts?$select=id,displayName,"
        ));
        assert!(contacts.ends_with("parentFolderId&$top=1"), "{contacts}");
        assert!(c.contacts_url("m", 5000).ends_with("$top=1000"));
        let delta = c.contacts_delta_url("u1").unwrap();
        assert!(delta.starts_with("https://graph.microsoft.com/v1.0/users/u1/contactFolders/contacts/contacts/delta?$select=id,"));
        assert!(delta.ends_with("parentFolderId"), "{delta}");
    }

    #[tokio::test]
    async fn no_contacts_delta_in_china() {
        let c = client_for(
            "https://microsoftgraph.chinacloudapi.cn",
            crate::entra::NationalCloud::China,
        );
        assert!(c.contacts_delta_url("u1").is_none());
        assert!(c.contact_folder_delta_url("u1", "F").is_none());
        assert!(c.contacts_url("u1", 10).contains("/users/u1/contacts?"));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(path_segment("O'Neil/x?y"), "O%27Neil%2Fx%3Fy");
        assert_eq!(path_segment("4f1c-9a@contoso.com"), "4f1c-9a@contoso.com");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
